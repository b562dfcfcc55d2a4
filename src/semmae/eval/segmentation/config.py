"""Configs of ``semmae segment train`` and ``semmae segment eval``.

Defaults are the paper's ADE20K setting (Table 7, following MAE/BEiT): UPerNet on ViT-B/16, crop 512, 160k
iterations at batch 16, AdamW lr 1e-4, weight decay 0.05, layer-wise lr decay 0.65, 1500 warmup iterations then a
poly (power 1) schedule, drop path 0.1, auxiliary FCN head weighted 0.4, sliding-window test (crop 512, stride 341)
at short side 512.
"""

from __future__ import annotations

from dataclasses import dataclass

from semmae.config import option
from semmae.engine.run_options import (
    PRECISIONS,
    check_resume_overwrite,
    overwrite_option,
    precision_option,
    resume_option,
)
from semmae.errors import UserError
from semmae.models.init_schemes import init_scheme_field

LAYOUTS = ("auto", "pairs", "synth")


@dataclass
class SegmentDataConfig:
    """Where the images and label maps are and how labels are read (shared by train and eval)."""

    data: str = option(
        "",
        "dataset root: an ADE20K release, an images/+annotations/ pair "
        "tree, or a `semmae data synth` output folder",
    )
    layout: str = option(
        "auto",
        "pairs = <root>/images/<split>/** + <root>/annotations/<split>/**.png (ADE20K release layout); "
        "synth = `semmae data synth` output (<split>/<class>/*.png + masks/<split>/<class>/*.png); "
        "auto = detect",
        choices=LAYOUTS,
    )
    num_classes: int = option(
        0, "number of classes; 0 = from the layout (150 for ADE20K, parts + background for synth)"
    )
    reduce_zero_label: bool | None = option(
        None,
        "ADE20K convention: label 0 is 'other' (ignored) and 1..K become 0..K-1; default: on for ADE20K, "
        "off otherwise (for synth, 0 = background is a real class)",
    )
    ignore_index: int = option(255, "label value left out of loss and metrics")
    train_split: str = option("", "training split folder name ('' = training or train)")
    val_split: str = option("", "validation split folder name ('' = validation or val)")
    eval_short_side: int = option(
        512,
        "evaluation images are resized to this short side (long side capped by --max-long); 0 = keep size",
    )
    max_long: int = option(2048, "cap on the long side when resizing (mmseg's 2048x512)")
    eval_stride: int = option(341, "sliding-window stride at evaluation (pixels)")
    num_vis: int = option(4, "validation images drawn next to their ground truth")
    out: str = option("runs/segment", "run directory")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = precision_option()
    num_workers: int = option(4, "data-loading worker processes per rank")
    seed: int = option(0, "random seed (each rank adds its rank)")

    def validate(self) -> None:
        if not self.data:
            raise UserError("--data is required (a dataset root)")
        if self.num_classes < 0:
            raise UserError(f"--num-classes must be >= 0, got {self.num_classes}")
        if not 0 <= self.ignore_index <= 255:
            raise UserError(
                f"--ignore-index must lie in [0, 255] (labels are 8-bit PNGs), got {self.ignore_index}"
            )
        if self.eval_short_side < 0 or self.max_long < 1 or self.eval_stride < 1:
            raise UserError("--eval-short-side must be >= 0 and --max-long, --eval-stride >= 1")
        if self.num_workers < 0 or self.num_vis < 0:
            raise UserError("--num-workers and --num-vis must be >= 0")


@dataclass
class SegmentTrainConfig(SegmentDataConfig):
    """``semmae segment train``: UPerNet + auxiliary FCN head on a ViT encoder."""

    checkpoint: str | None = option(
        None,
        "pretrained encoder checkpoint (any layout semmae.models.encoder_loading reads) or run folder",
        checkpoint=True,
    )
    random_init: bool = option(
        False,
        "randomly initialised encoder (the baseline); with --checkpoint it takes only that architecture",
    )
    init: str = init_scheme_field()
    freeze_encoder: bool = option(
        False,
        "keep the encoder fixed and train only the pyramid necks and the heads (a segmentation probe "
        "of the encoder's features; isolates what pretraining contributes)",
    )
    arch: str | None = option(
        None, "encoder architecture name (e.g. vit_base_patch16); inferred from the checkpoint when not given"
    )
    embed_dim: int | None = option(None, "random-init encoder width (overrides --arch)")
    depth: int | None = option(None, "random-init encoder depth (overrides --arch)")
    num_heads: int | None = option(None, "encoder attention heads (overrides --arch)")
    patch_size: int | None = option(None, "random-init encoder patch size")
    out_indices: list[int] = option(
        [], "0-based blocks feeding the 4 levels; empty = evenly spaced (3 5 7 11 for depth 12)"
    )
    drop_path: float = option(0.1, "stochastic depth rate of the last encoder block")
    head_channels: int = option(512, "UPerNet channels")
    aux_channels: int = option(256, "auxiliary FCN head channels")
    aux_weight: float = option(0.4, "auxiliary loss weight (0 = no auxiliary head)")
    pool_scales: list[int] = option([1, 2, 3, 6], "PPM bin sizes")
    head_dropout: float = option(0.1, "dropout before the classifiers")
    crop_size: int = option(512, "training crop and sliding-window size (pixels)")
    scale_base: int = option(512, "short side before the random scale ratio")
    scale_range: list[float] = option([0.5, 2.0], "random scale ratio")
    hflip: bool = option(True, "random horizontal flip")
    photometric: bool = option(True, "brightness/contrast/saturation/hue jitter")
    iters: int = option(160000, "training iterations")
    batch_size: int = option(16, "global batch size (split over ranks)")
    lr: float = option(1e-4, "peak learning rate")
    weight_decay: float = option(0.05, "AdamW weight decay (not on norms, biases, tokens)")
    layer_decay: float = option(0.65, "layer-wise lr decay of the encoder blocks")
    betas: list[float] = option([0.9, 0.999], "AdamW betas")
    warmup_iters: int = option(1500, "linear warmup iterations")
    poly_power: float = option(1.0, "poly schedule power")
    min_lr: float = option(0.0, "learning rate at the last iteration")
    clip_grad: float = option(0.0, "max gradient norm (0 = no clipping)")
    eval_every: int = option(16000, "evaluate every N iterations (0 = only at the end)")
    ckpt_every: int = option(4000, "write checkpoint.pth every N iterations")
    log_every: int = option(50, "log the loss every N iterations")
    resume: str | None = resume_option(None)
    overwrite: bool = overwrite_option()

    def validate(self) -> None:
        super().validate()
        if not self.checkpoint and not self.random_init:
            raise UserError(
                "give --checkpoint PATH (pretrained encoder) or --random-init (with --checkpoint: its "
                "architecture, untrained; without: --arch)"
            )
        if self.iters < 1 or self.batch_size < 1 or self.crop_size < 1 or self.scale_base < 1:
            raise UserError("--iters, --batch-size, --crop-size and --scale-base must be >= 1")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise UserError(f"--scale-range needs two values 0 < lo <= hi, got {self.scale_range}")
        if len(self.betas) != 2:
            raise UserError(f"--betas needs two values, got {self.betas}")
        if self.out_indices and len(self.out_indices) != 4:
            raise UserError(f"--out-indices needs exactly 4 block indices, got {self.out_indices}")
        if not 0 < self.layer_decay <= 1:
            raise UserError(f"--layer-decay must lie in (0, 1], got {self.layer_decay}")
        if (
            self.lr <= 0
            or self.warmup_iters < 0
            or self.eval_every < 0
            or self.ckpt_every < 0
            or self.log_every < 1
        ):
            raise UserError(
                "--lr must be > 0; --warmup-iters, --eval-every, --ckpt-every >= 0; --log-every >= 1"
            )
        if self.clip_grad < 0:
            raise UserError(f"--clip-grad must be >= 0 (0 = no clipping), got {self.clip_grad}")
        check_resume_overwrite(self.resume, self.overwrite)
        if self.aux_weight < 0 or not 0 <= self.drop_path < 1 or not 0 <= self.head_dropout < 1:
            raise UserError("--aux-weight must be >= 0, --drop-path and --head-dropout in [0, 1)")


# fields of the training run that ``segment eval`` reuses unless given again
INHERITED_FIELDS = (
    "data",
    "layout",
    "num_classes",
    "reduce_zero_label",
    "ignore_index",
    "val_split",
    "eval_short_side",
    "max_long",
    "eval_stride",
    "precision",
)


@dataclass
class SegmentEvalConfig:
    """``semmae segment eval``: sliding-window mIoU of a trained segmentation checkpoint.

    Every data field left unset (None) is taken from the training run's config stored in the checkpoint.
    """

    checkpoint: str = option(
        "",
        "a `semmae segment train` checkpoint (seg_final.pth / checkpoint.pth) or its run directory",
        checkpoint=True,
    )
    data: str | None = option(None, "dataset root (default: the training run's)")
    layout: str | None = option(None, "dataset layout (default: the training run's)", choices=LAYOUTS)
    num_classes: int | None = option(None, "number of classes (default: the run's)")
    reduce_zero_label: bool | None = option(None, "ADE20K label convention (default: the run's)")
    ignore_index: int | None = option(None, "ignored label value (default: the run's)")
    val_split: str | None = option(None, "split to evaluate (default: the run's)")
    eval_short_side: int | None = option(None, "test short side (default: the run's)")
    max_long: int | None = option(None, "test long-side cap (default: the run's)")
    eval_stride: int | None = option(None, "sliding-window stride (default: the run's)")
    precision: str | None = option(None, "autocast precision (default: the run's)", choices=PRECISIONS)
    num_vis: int = option(4, "validation images drawn next to their ground truth")
    out: str = option("runs/segment-eval", "output directory (results.json, PNG)")
    overwrite: bool = overwrite_option()
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    num_workers: int = option(2, "data-loading worker processes per rank")
    seed: int = option(0, "random seed")

    def validate(self) -> None:
        if not self.checkpoint:
            raise UserError("--checkpoint is required (a `semmae segment train` checkpoint or run directory)")
        if self.num_workers < 0 or self.num_vis < 0:
            raise UserError("--num-workers and --num-vis must be >= 0")
