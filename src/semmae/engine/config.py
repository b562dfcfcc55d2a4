"""``PretrainConfig``: every knob of ``semmae pretrain`` (paper Sec. 4.1; MAE, He et al. 2022, Table 8).

Defaults are the paper's ViT-B/16 setting: 800 epochs with 40 warm-up epochs, AdamW (betas 0.9/0.95, weight
decay 0.05), base learning rate 1.5e-4 scaled by effective batch / 256, global batch 4096, mask ratio 0.75 and the
adaptive semantic-guided masking schedule with gamma 2. Each field is a flag (``--batch-size``) via
:func:`semmae.config.add_config_args`; presets live in ``semmae/configs/pretrain/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from semmae.data.workers import parse_num_workers
from semmae.errors import UserError
from semmae.utils.precision import PRECISIONS

PART_FREE_HINT = "random, block"
AUGMENTATIONS = ("crop-flip", "flip")


def _f(default, help: str, **meta):
    return field(default=default, metadata=dict(help=help, **meta))


@dataclass
class PretrainConfig:
    # data
    data: str = _f(
        "",
        "training images: an ImageFolder root (class sub-folders), or a pack from `semmae data pack` (decoded "
        "once; crops and flips run on whole batches, part cells included)",
    )
    parts: str | None = _f(
        None, "part cache written by `semmae parts export` (needed by part-guided masking)"
    )
    img_size: int = _f(224, "input resolution S (the augmented image's side)")
    augment: str = _f(
        "crop-flip",
        "pretraining augmentation: crop-flip = MAE's RandomResizedCrop (--crop-scale) + flip; flip = SemMAE's "
        "(paper Sec. 4.1): the whole image resized to --img-size + flip. The part map follows the same geometry",
        choices=AUGMENTATIONS,
    )
    crop_scale: tuple[float, float] = _f(
        (0.2, 1.0), "RandomResizedCrop area range of --augment crop-flip (MAE: 0.2 1.0)"
    )
    hflip: bool = _f(True, "random horizontal flip (either --augment)")
    num_workers: str = _f(
        "8",
        "DataLoader worker processes per rank, or 'auto': what the cores leave after the training step "
        "(semmae.data.workers)",
    )
    skip_bad_images: bool = _f(False, "skip unreadable images instead of stopping (count is logged)")
    # model
    model: str = _f("mae_vit_base_patch16", "registered MAE model name (semmae.models.create_model)")
    patch_size: int | None = _f(None, "override the model's patch size")
    embed_dim: int | None = _f(None, "override the encoder width")
    depth: int | None = _f(None, "override the encoder depth")
    num_heads: int | None = _f(None, "override the encoder heads")
    decoder_embed_dim: int | None = _f(None, "override the decoder width")
    decoder_depth: int | None = _f(None, "override the decoder depth")
    decoder_num_heads: int | None = _f(None, "override the decoder heads")
    norm_pix_loss: bool = _f(True, "regress per-patch normalised pixels (MAE's default)")
    # masking (paper Sec. 3.2, Algorithm 1)
    masking: str = _f(
        "adaptive",
        "masking strategy: adaptive, adaptive-reverse, per-part, whole-part, attention (these need --parts), "
        "random, block",
    )
    mask_ratio: float = _f(0.75, "fraction of (kept) patches that are masked")
    gamma: float = _f(
        2.0,
        "exponent of the adaptive schedule alpha = progress ** gamma (0 at the start, 1 at the end of "
        "training; adaptive-reverse: 1 - progress ** gamma); paper Algorithm 1 line 7, gamma 2",
    )
    fg_keep: float = _f(
        1.0,
        "fraction of patches that enter the model, chosen by foreground score "
        "(paper's ViT-B/8 setting: 0.25); 1 = all",
    )
    # optimisation
    epochs: int = _f(800, "training epochs")
    warmup_epochs: float = _f(40.0, "linear learning-rate warm-up, in epochs")
    batch_size: int = _f(64, "images per rank per micro-batch")
    accum_iter: int = _f(1, "gradient-accumulation micro-batches per optimiser step")
    global_batch: int | None = _f(
        None, "target effective batch; derives --accum-iter from batch size x world size"
    )
    blr: float = _f(1.5e-4, "base learning rate: lr = blr x effective batch / 256")
    lr: float | None = _f(None, "absolute learning rate (overrides --blr)")
    min_lr: float = _f(0.0, "learning rate at the end of the cosine schedule")
    weight_decay: float = _f(
        0.05, "AdamW weight decay (not applied to norms, biases, position/special tokens)"
    )
    betas: tuple[float, float] = _f((0.9, 0.95), "AdamW betas")
    clip_grad: float | None = _f(None, "clip the total gradient norm to this value (off when unset)")
    precision: str = _f("auto", "auto: bf16 where supported, else fp16 + grad scaler", choices=PRECISIONS)
    compile: bool = _f(False, "torch.compile the model")
    # run
    out: str = _f("runs/pretrain", "run directory (config, log.jsonl, tb/, checkpoints/, vis/)")
    device: str = _f("auto", "auto | cpu | cuda (under torchrun each rank takes its LOCAL_RANK GPU)")
    seed: int = _f(0, "random seed (augmentations and masks are a function of seed, epoch/step and index)")
    resume: str | None = _f(
        None,
        "checkpoint to continue from, or 'auto' for the run directory's newest checkpoint that loads "
        "(a fresh run into a folder that holds a run is refused without --resume or --overwrite)",
    )
    overwrite: bool = _f(False, "delete the run already in --out and start again (instead of --resume)")
    ckpt_every: int = _f(0, "also checkpoint every N optimiser steps (0: only at epoch ends)")
    keep_last: int = _f(3, "keep the newest K checkpoints")
    max_steps: int | None = _f(None, "stop after this many optimiser steps (schedules still span all epochs)")
    log_every: int = _f(50, "append to log.jsonl / TensorBoard every N optimiser steps")
    progress: bool = _f(True, "tqdm progress bar on rank 0")
    vis_every: int = _f(
        20, "write a PNG panel (original / masked / reconstruction / part map) every K epochs"
    )
    vis_images: int = _f(4, "images in the PNG panel")
    eval_every: int = _f(0, "online kNN every K epochs on --eval-train / --eval-val (0: off)")
    eval_train: str | None = _f(None, "kNN memory bank: labelled ImageFolder")
    eval_val: str | None = _f(None, "kNN queries: labelled ImageFolder")
    knn_k: int = _f(20, "neighbours of the online kNN")

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(bool(self.data), "--data is required: the folder of training images")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(
            0 <= self.warmup_epochs <= self.epochs,
            f"--warmup-epochs must be in [0, epochs], got {self.warmup_epochs}",
        )
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.accum_iter >= 1, f"--accum-iter must be >= 1, got {self.accum_iter}")
        need(self.global_batch is None or self.global_batch >= 1, "--global-batch must be >= 1")
        need(0.0 < self.mask_ratio < 1.0, f"--mask-ratio must be in (0, 1), got {self.mask_ratio}")
        need(0.0 < self.fg_keep <= 1.0, f"--fg-keep must be in (0, 1], got {self.fg_keep}")
        need(self.gamma > 0, f"--gamma must be > 0, got {self.gamma}")
        need(self.blr > 0 and (self.lr is None or self.lr > 0), "learning rates must be > 0")
        need(
            self.clip_grad is None or self.clip_grad > 0,
            f"--clip-grad must be > 0 (leave it unset for no clipping), got {self.clip_grad}",
        )
        need(
            not (self.resume and self.overwrite),
            "--resume continues a run and --overwrite deletes it: pass one",
        )
        need(self.min_lr >= 0 and self.weight_decay >= 0, "--min-lr and --weight-decay must be >= 0")
        need(all(0 <= b < 1 for b in self.betas), f"--betas must be in [0, 1), got {self.betas}")
        need(
            0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            f"--crop-scale must be 0 < lo <= hi <= 1, got {self.crop_scale}",
        )
        try:
            parse_num_workers(self.num_workers)
        except ValueError:
            raise UserError(
                f"--num-workers must be 'auto' or a count >= 0, got {self.num_workers!r}"
            ) from None
        need(self.ckpt_every >= 0 and self.keep_last >= 1, "--ckpt-every must be >= 0 and --keep-last >= 1")
        need(self.log_every >= 1, "--log-every must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1")
        need(
            self.vis_every >= 0 and self.eval_every >= 0 and self.vis_images >= 1,
            "--vis-every/--eval-every must be >= 0",
        )
        if self.eval_every:
            need(
                bool(self.eval_train and self.eval_val),
                "--eval-every needs --eval-train and --eval-val folders",
            )

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
