"""``PretrainConfig``: every knob of ``semmae pretrain`` (paper Sec. 4.1; MAE, He et al. 2022, Table 8).

Defaults are the paper's ViT-B/16 setting: 800 epochs with 40 warm-up epochs, AdamW (betas 0.9/0.95, weight
decay 0.05), base learning rate 1.5e-4 scaled by effective batch / 256, global batch 4096, mask ratio 0.75 and the
adaptive semantic-guided masking schedule with gamma 2. Each field is a flag (``--batch-size``) via
:func:`semmae.config.add_config_args`; presets live in ``semmae/configs/pretrain/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from semmae.config import option
from semmae.data.workers import check_num_workers
from semmae.engine.run_options import StepRunOptions, need

PART_FREE_HINT = "random, block"
AUGMENTATIONS = ("crop-flip", "flip")


@dataclass
class PretrainConfig(StepRunOptions):
    # data
    data: str = option(
        "",
        "training images: an ImageFolder root (class sub-folders), or a pack from `semmae data pack` (decoded "
        "once; crops and flips run on whole batches, part cells included)",
    )
    parts: str | None = option(
        None, "part cache written by `semmae parts export` (needed by part-guided masking)"
    )
    img_size: int = option(224, "input resolution S (the augmented image's side)")
    augment: str = option(
        "crop-flip",
        "pretraining augmentation: crop-flip = MAE's RandomResizedCrop (--crop-scale) + flip; flip = SemMAE's "
        "(paper Sec. 4.1): the whole image resized to --img-size + flip. The part map follows the same geometry",
        choices=AUGMENTATIONS,
    )
    crop_scale: tuple[float, float] = option(
        (0.2, 1.0), "RandomResizedCrop area range of --augment crop-flip (MAE: 0.2 1.0)"
    )
    hflip: bool = option(True, "random horizontal flip (either --augment)")
    num_workers: str = option(
        "8",
        "DataLoader worker processes per rank, or 'auto': what the cores leave after the training step "
        "(semmae.data.workers)",
    )
    skip_bad_images: bool = option(False, "skip unreadable images instead of stopping (count is logged)")
    # model
    model: str = option("mae_vit_base_patch16", "registered MAE model name (semmae.models.create_model)")
    patch_size: int | None = option(None, "override the model's patch size")
    embed_dim: int | None = option(None, "override the encoder width")
    depth: int | None = option(None, "override the encoder depth")
    num_heads: int | None = option(None, "override the encoder heads")
    decoder_embed_dim: int | None = option(None, "override the decoder width")
    decoder_depth: int | None = option(None, "override the decoder depth")
    decoder_num_heads: int | None = option(None, "override the decoder heads")
    norm_pix_loss: bool = option(True, "regress per-patch normalised pixels (MAE's default)")
    # masking (paper Sec. 3.2, Algorithm 1)
    masking: str = option(
        "adaptive",
        "masking strategy: adaptive, adaptive-reverse, per-part, whole-part, attention (these need --parts), "
        "random, block",
    )
    mask_ratio: float = option(0.75, "fraction of (kept) patches that are masked")
    gamma: float = option(
        2.0,
        "exponent of the adaptive schedule alpha = progress ** gamma (0 at the start, 1 at the end of "
        "training; adaptive-reverse: 1 - progress ** gamma); paper Algorithm 1 line 7, gamma 2",
    )
    alpha_max: float = option(
        1.0,
        "cap of the adaptive schedule, in (0, 1]: alpha = alpha_max x progress ** gamma (adaptive-reverse: "
        "alpha_max x (1 - progress ** gamma)); 1 = the paper, 0.5 stops at half-way between per-part and "
        "whole-part masking. Only with --masking adaptive or adaptive-reverse",
    )
    fg_keep: float = option(
        1.0,
        "fraction of patches that enter the model, chosen by foreground score "
        "(paper's ViT-B/8 setting: 0.25); 1 = all",
    )
    # optimisation
    epochs: int = option(800, "training epochs")
    warmup_epochs: float = option(40.0, "linear learning-rate warm-up, in epochs")
    batch_size: int = option(64, "images per rank per micro-batch")
    accum_iter: int = option(1, "gradient-accumulation micro-batches per optimiser step")
    global_batch: int | None = option(
        None, "target effective batch; derives --accum-iter from batch size x world size"
    )
    blr: float = option(1.5e-4, "base learning rate: lr = blr x effective batch / 256")
    lr: float | None = option(None, "absolute learning rate (overrides --blr)")
    min_lr: float = option(0.0, "learning rate at the end of the cosine schedule")
    weight_decay: float = option(
        0.05, "AdamW weight decay (not applied to norms, biases, position/special tokens)"
    )
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas")
    clip_grad: float | None = option(None, "clip the total gradient norm to this value (off when unset)")
    # run
    out: str = option("runs/pretrain", "run directory (config, log.jsonl, tb/, checkpoints/, vis/)")
    vis_every: int = option(
        20, "write a PNG panel (original / masked / reconstruction / part map) every K epochs"
    )
    vis_images: int = option(4, "images in the PNG panel")

    def validate(self) -> None:
        self.validate_run()
        need(0.0 < self.mask_ratio < 1.0, f"--mask-ratio must be in (0, 1), got {self.mask_ratio}")
        need(0.0 < self.fg_keep <= 1.0, f"--fg-keep must be in (0, 1], got {self.fg_keep}")
        need(self.gamma > 0, f"--gamma must be > 0, got {self.gamma}")
        need(
            not isinstance(self.alpha_max, bool)
            and isinstance(self.alpha_max, (int, float))
            and 0.0 < self.alpha_max <= 1.0,
            f"--alpha-max must be in (0, 1], got {self.alpha_max}",
        )
        need(
            self.alpha_max == 1.0 or self.masking in ("adaptive", "adaptive-reverse"),
            f"--alpha-max {self.alpha_max:g} caps the adaptive schedules: use it with --masking adaptive or "
            f"adaptive-reverse, not {self.masking}",
        )
        need(
            self.clip_grad is None or self.clip_grad > 0,
            f"--clip-grad must be > 0 (leave it unset for no clipping), got {self.clip_grad}",
        )
        need(self.min_lr >= 0 and self.weight_decay >= 0, "--min-lr and --weight-decay must be >= 0")
        need(
            0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            f"--crop-scale must be 0 < lo <= hi <= 1, got {self.crop_scale}",
        )
        check_num_workers(self.num_workers)
        need(self.vis_every >= 0 and self.vis_images >= 1, "--vis-every must be >= 0 and --vis-images >= 1")

    def model_overrides(self) -> dict:
        """Keyword overrides for ``create_model`` (only those that were set)."""
        keys = (
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
        )
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        return {"img_size": self.img_size, "norm_pix_loss": self.norm_pix_loss, **out}
