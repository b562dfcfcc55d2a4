"""``BootstrapConfig``: every knob of ``semmae bootstrap`` (iBOT, Zhou et al. 2022; DINO, Caron et al. 2021).

Defaults are iBOT's ViT-S/16 recipe as its paper and README give it: 2 global crops at 224 (scale 0.25-1) and 10
local crops at 96 (scale 0.05-0.25), a shared 8192-way head (hidden 2048, bottleneck 256, last layer not
normalised, frozen for the first epoch), teacher momentum 0.996 -> 1 (cosine), teacher temperature 0.04 -> 0.07
over 30 epochs, student temperature 0.1, centre momentum 0.9, masked-patch distillation on half of the global
crops with a ratio drawn from 0.1-0.5, AdamW with blr 5e-4 (x batch / 256), 10 warm-up epochs, weight decay
0.04 -> 0.4 (cosine), gradient clipping 3, stochastic depth 0.1, 800 epochs. Every field is a flag via
:func:`semmae.config.add_config_args`; presets live in ``semmae/configs/bootstrap/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from semmae.config import option
from semmae.engine.run_options import StepRunOptions, need


@dataclass
class BootstrapConfig(StepRunOptions):
    # data and multi-crop views
    data: str = option("", "training images: an ImageFolder root (class sub-folders) or a flat folder tree")
    img_size: int = option(224, "global crop side (the encoder's resolution; the checkpoint records it)")
    local_size: int = option(96, "local crop side (a multiple of the patch size)")
    local_crops: int = option(10, "local crops per image (0: two global crops only)")
    global_scale: tuple[float, float] = option(
        (0.25, 1.0), "RandomResizedCrop area range of the global crops"
    )
    local_scale: tuple[float, float] = option((0.05, 0.25), "RandomResizedCrop area range of the local crops")
    num_workers: int = option(8, "DataLoader worker processes per rank")
    skip_bad_images: bool = option(False, "skip unreadable images instead of stopping (count is logged)")
    # encoder (the project's sizes, semmae.models.registry) and head
    model: str = option(
        "vit_small_patch16",
        "encoder size: vit_<micro|tiny|small|base|large|huge>_patch<p> (the sizes of semmae.models.registry)",
    )
    patch_size: int | None = option(None, "override the encoder's patch size")
    embed_dim: int | None = option(None, "override the encoder width")
    depth: int | None = option(None, "override the encoder depth")
    num_heads: int | None = option(None, "override the encoder heads")
    drop_path: float = option(0.1, "stochastic depth of the student (the teacher has none)")
    out_dim: int = option(8192, "prototypes K of the projection head (iBOT ViT-S: 8192; DINO: 65536)")
    head_hidden_dim: int = option(2048, "hidden width of the head's 3-layer MLP")
    head_bottleneck_dim: int = option(256, "bottleneck before the L2-normalised prototype layer")
    norm_last_layer: bool = option(False, "fix the prototype layer's row norms to 1 (iBOT ViT-S: off)")
    freeze_last_layer: float = option(1.0, "epochs during which the prototype layer gets no gradient")
    # self-distillation
    momentum: float = option(0.996, "teacher EMA momentum at the start; follows a cosine to 1 at the end")
    teacher_temp: float = option(0.07, "teacher temperature after the warm-up (sharpening)")
    warmup_teacher_temp: float = option(0.04, "teacher temperature at step 0")
    warmup_teacher_temp_epochs: float = option(30.0, "linear teacher-temperature warm-up, in epochs")
    student_temp: float = option(0.1, "student temperature")
    center_momentum: float = option(0.9, "EMA momentum of the teacher-output centres (centring)")
    ibot: bool = option(True, "iBOT's masked-patch distillation on the global crops; --no-ibot = DINO")
    patch_weight: float = option(1.0, "weight of the masked-patch loss (iBOT lambda 2)")
    mask_prob: float = option(0.5, "share of global crops that are masked (iBOT: 0.5)")
    mask_ratio: tuple[float, float] = option((0.1, 0.5), "masked share of a masked crop, drawn uniformly")
    # optimisation
    epochs: int = option(800, "training epochs")
    warmup_epochs: float = option(10.0, "linear learning-rate warm-up, in epochs")
    batch_size: int = option(64, "images per rank per micro-batch (each image gives 2 + local-crops views)")
    accum_iter: int = option(1, "gradient-accumulation micro-batches per optimiser step")
    global_batch: int | None = option(None, "target effective batch; derives --accum-iter")
    blr: float = option(5e-4, "base learning rate: lr = blr x effective batch / 256")
    lr: float | None = option(None, "absolute learning rate (overrides --blr)")
    min_lr: float = option(1e-6, "learning rate at the end of the cosine schedule")
    weight_decay: float = option(0.04, "AdamW weight decay at the start (not on norms, biases, tokens)")
    weight_decay_end: float = option(0.4, "weight decay at the end (cosine from --weight-decay)")
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW betas")
    clip_grad: float | None = option(3.0, "clip the student's total gradient norm (off when unset or 0)")
    # run
    out: str = option("runs/bootstrap", "run directory (config, log.jsonl, tb/, checkpoints/)")

    def validate(self) -> None:
        self.validate_run()
        need(self.img_size >= 1 and self.local_size >= 1, "--img-size and --local-size must be >= 1")
        need(self.local_crops >= 0, f"--local-crops must be >= 0, got {self.local_crops}")
        need(
            self.local_size <= self.img_size,
            f"--local-size {self.local_size} is larger than --img-size {self.img_size}: local crops are the small "
            "views; pass a --local-size up to the global crop's side",
        )
        for name, (lo, hi) in (("--global-scale", self.global_scale), ("--local-scale", self.local_scale)):
            need(0 < lo <= hi <= 1, f"{name} must be 0 < lo <= hi <= 1, got {lo} {hi}")
        need(self.warmup_teacher_temp_epochs >= 0, "--warmup-teacher-temp-epochs must be >= 0")
        need(self.freeze_last_layer >= 0, "--freeze-last-layer must be >= 0")
        need(0 <= self.momentum <= 1, f"--momentum must be in [0, 1], got {self.momentum}")
        need(
            0 <= self.center_momentum < 1, f"--center-momentum must be in [0, 1), got {self.center_momentum}"
        )
        need(
            min(self.teacher_temp, self.warmup_teacher_temp, self.student_temp) > 0,
            "temperatures (--teacher-temp, --warmup-teacher-temp, --student-temp) must be > 0",
        )
        need(self.out_dim >= 2, f"--out-dim must be >= 2, got {self.out_dim}")
        need(self.head_hidden_dim >= 1 and self.head_bottleneck_dim >= 1, "head dimensions must be >= 1")
        need(0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}")
        need(0 <= self.mask_prob <= 1, f"--mask-prob must be in [0, 1], got {self.mask_prob}")
        lo, hi = self.mask_ratio
        need(0 <= lo <= hi < 1, f"--mask-ratio must be 0 <= lo <= hi < 1, got {lo} {hi}")
        need(self.patch_weight >= 0, "--patch-weight must be >= 0")
        need(
            min(self.min_lr, self.weight_decay, self.weight_decay_end) >= 0,
            "--min-lr and the weight decays must be >= 0",
        )
        need(self.num_workers >= 0, "--num-workers must be >= 0")

    def encoder_overrides(self) -> dict:
        """Architecture overrides that were set (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``)."""
        keys = ("patch_size", "embed_dim", "depth", "num_heads")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
