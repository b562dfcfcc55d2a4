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

from dataclasses import dataclass, field

from semmae.errors import UserError
from semmae.utils.precision import PRECISIONS


def _f(default, help: str, **meta):
    return field(default=default, metadata=dict(help=help, **meta))


@dataclass
class BootstrapConfig:
    # data and multi-crop views
    data: str = _f("", "training images: an ImageFolder root (class sub-folders) or a flat folder tree")
    img_size: int = _f(224, "global crop side (the encoder's resolution; the checkpoint records it)")
    local_size: int = _f(96, "local crop side (a multiple of the patch size)")
    local_crops: int = _f(10, "local crops per image (0: two global crops only)")
    global_scale: tuple[float, float] = _f((0.25, 1.0), "RandomResizedCrop area range of the global crops")
    local_scale: tuple[float, float] = _f((0.05, 0.25), "RandomResizedCrop area range of the local crops")
    num_workers: int = _f(8, "DataLoader worker processes per rank")
    skip_bad_images: bool = _f(False, "skip unreadable images instead of stopping (count is logged)")
    # encoder (the project's sizes, semmae.models.registry) and head
    model: str = _f(
        "vit_small_patch16",
        "encoder size: vit_<micro|tiny|small|base|large|huge>_patch<p> (the sizes of semmae.models.registry)",
    )
    patch_size: int | None = _f(None, "override the encoder's patch size")
    embed_dim: int | None = _f(None, "override the encoder width")
    depth: int | None = _f(None, "override the encoder depth")
    num_heads: int | None = _f(None, "override the encoder heads")
    drop_path: float = _f(0.1, "stochastic depth of the student (the teacher has none)")
    out_dim: int = _f(8192, "prototypes K of the projection head (iBOT ViT-S: 8192; DINO: 65536)")
    head_hidden_dim: int = _f(2048, "hidden width of the head's 3-layer MLP")
    head_bottleneck_dim: int = _f(256, "bottleneck before the L2-normalised prototype layer")
    norm_last_layer: bool = _f(False, "fix the prototype layer's row norms to 1 (iBOT ViT-S: off)")
    freeze_last_layer: float = _f(1.0, "epochs during which the prototype layer gets no gradient")
    # self-distillation
    momentum: float = _f(0.996, "teacher EMA momentum at the start; follows a cosine to 1 at the end")
    teacher_temp: float = _f(0.07, "teacher temperature after the warm-up (sharpening)")
    warmup_teacher_temp: float = _f(0.04, "teacher temperature at step 0")
    warmup_teacher_temp_epochs: float = _f(30.0, "linear teacher-temperature warm-up, in epochs")
    student_temp: float = _f(0.1, "student temperature")
    center_momentum: float = _f(0.9, "EMA momentum of the teacher-output centres (centring)")
    ibot: bool = _f(True, "iBOT's masked-patch distillation on the global crops; --no-ibot = DINO")
    patch_weight: float = _f(1.0, "weight of the masked-patch loss (iBOT lambda 2)")
    mask_prob: float = _f(0.5, "share of global crops that are masked (iBOT: 0.5)")
    mask_ratio: tuple[float, float] = _f((0.1, 0.5), "masked share of a masked crop, drawn uniformly")
    # optimisation
    epochs: int = _f(800, "training epochs")
    warmup_epochs: float = _f(10.0, "linear learning-rate warm-up, in epochs")
    batch_size: int = _f(64, "images per rank per micro-batch (each image gives 2 + local-crops views)")
    accum_iter: int = _f(1, "gradient-accumulation micro-batches per optimiser step")
    global_batch: int | None = _f(None, "target effective batch; derives --accum-iter")
    blr: float = _f(5e-4, "base learning rate: lr = blr x effective batch / 256")
    lr: float | None = _f(None, "absolute learning rate (overrides --blr)")
    min_lr: float = _f(1e-6, "learning rate at the end of the cosine schedule")
    weight_decay: float = _f(0.04, "AdamW weight decay at the start (not on norms, biases, tokens)")
    weight_decay_end: float = _f(0.4, "weight decay at the end (cosine from --weight-decay)")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    clip_grad: float | None = _f(3.0, "clip the student's total gradient norm (off when unset or 0)")
    precision: str = _f("auto", "auto: bf16 where supported, else fp16 + grad scaler", choices=PRECISIONS)
    compile: bool = _f(False, "torch.compile the student")
    # run
    out: str = _f("runs/bootstrap", "run directory (config, log.jsonl, tb/, checkpoints/)")
    device: str = _f("auto", "auto | cpu | cuda (under torchrun each rank takes its LOCAL_RANK GPU)")
    seed: int = _f(0, "random seed (crops and masks are a function of seed, epoch/step and index)")
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
    eval_every: int = _f(0, "online kNN of the teacher every K epochs on --eval-train / --eval-val (0: off)")
    eval_train: str | None = _f(None, "kNN memory bank: labelled ImageFolder")
    eval_val: str | None = _f(None, "kNN queries: labelled ImageFolder")
    knn_k: int = _f(20, "neighbours of the online kNN")

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(bool(self.data), "--data is required: the folder of training images")
        need(self.img_size >= 1 and self.local_size >= 1, "--img-size and --local-size must be >= 1")
        need(self.local_crops >= 0, f"--local-crops must be >= 0, got {self.local_crops}")
        for name, (lo, hi) in (("--global-scale", self.global_scale), ("--local-scale", self.local_scale)):
            need(0 < lo <= hi <= 1, f"{name} must be 0 < lo <= hi <= 1, got {lo} {hi}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(
            0 <= self.warmup_epochs <= self.epochs,
            f"--warmup-epochs must be in [0, epochs], got {self.warmup_epochs}",
        )
        need(self.warmup_teacher_temp_epochs >= 0, "--warmup-teacher-temp-epochs must be >= 0")
        need(self.freeze_last_layer >= 0, "--freeze-last-layer must be >= 0")
        need(self.batch_size >= 1 and self.accum_iter >= 1, "--batch-size and --accum-iter must be >= 1")
        need(self.global_batch is None or self.global_batch >= 1, "--global-batch must be >= 1")
        need(0 <= self.momentum <= 1, f"--momentum must be in [0, 1], got {self.momentum}")
        need(
            0 <= self.center_momentum < 1, f"--center-momentum must be in [0, 1), got {self.center_momentum}"
        )
        need(
            min(self.teacher_temp, self.warmup_teacher_temp, self.student_temp) > 0,
            "temperatures (--teacher-temp, --warmup-teacher-temp, --student-temp) must be > 0",
        )
        need(
            not (self.resume and self.overwrite),
            "--resume continues a run and --overwrite deletes it: pass one",
        )
        need(self.out_dim >= 2, f"--out-dim must be >= 2, got {self.out_dim}")
        need(self.head_hidden_dim >= 1 and self.head_bottleneck_dim >= 1, "head dimensions must be >= 1")
        need(0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}")
        need(0 <= self.mask_prob <= 1, f"--mask-prob must be in [0, 1], got {self.mask_prob}")
        lo, hi = self.mask_ratio
        need(0 <= lo <= hi < 1, f"--mask-ratio must be 0 <= lo <= hi < 1, got {lo} {hi}")
        need(self.patch_weight >= 0, "--patch-weight must be >= 0")
        need(self.blr > 0 and (self.lr is None or self.lr > 0), "learning rates must be > 0")
        need(
            min(self.min_lr, self.weight_decay, self.weight_decay_end) >= 0,
            "--min-lr and the weight decays must be >= 0",
        )
        need(all(0 <= b < 1 for b in self.betas), f"--betas must be in [0, 1), got {self.betas}")
        need(self.num_workers >= 0, "--num-workers must be >= 0")
        need(self.ckpt_every >= 0 and self.keep_last >= 1, "--ckpt-every must be >= 0 and --keep-last >= 1")
        need(self.log_every >= 1, "--log-every must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1")
        need(self.eval_every >= 0, "--eval-every must be >= 0")
        if self.eval_every:
            need(
                bool(self.eval_train and self.eval_val),
                "--eval-every needs --eval-train and --eval-val folders",
            )

    def encoder_overrides(self) -> dict:
        """Architecture overrides that were set (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``)."""
        keys = ("patch_size", "embed_dim", "depth", "num_heads")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
