"""Configs of the evaluation verbs (paper Sec. 4 protocols): ``semmae linprobe``, ``finetune`` and ``knn``, and the
data/encoder flags they share. No torch here: ``semmae <verb> --help`` reads these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semmae.config import option
from semmae.engine.run_options import (
    check_every_option,
    check_resume_overwrite,
    overwrite_option,
    precision_option,
    resume_option,
)
from semmae.errors import UserError
from semmae.models.init_schemes import init_scheme_field


@dataclass
class EvalCommonConfig:
    """Flags shared by ``linprobe``, ``finetune`` and ``knn``."""

    train: str | None = option(None, "training ImageFolder (class folders)")
    val: str | None = option(None, "validation ImageFolder")
    data: str | None = option(None, "folder holding train/ and val/ (instead of --train/--val)")
    checkpoint: str | None = option(
        None, "encoder checkpoint (.pth/.safetensors, any layout) or run folder", checkpoint=True
    )
    random_init: bool = option(False, "evaluate an untrained encoder of the same architecture")
    init: str = init_scheme_field()
    arch: str | None = option(None, "ViT name (e.g. vit_base_patch16); inferred from the checkpoint")
    num_heads: int | None = option(None, "attention heads when the checkpoint cannot tell")
    img_size: int | None = option(None, "evaluation resolution (default: the checkpoint's)")
    batch_size: int = option(256, "images per process per step")
    num_workers: int = option(8, "data-loader workers per process")
    precision: str = precision_option()
    out: str = option("runs/eval", "run directory")
    device: str = option("auto", "auto | cpu | cuda")
    seed: int = option(0, "random seed")
    crop_pct: float = option(
        0.875,
        "evaluation view: resize the short side to img_size / crop_pct, center-crop img_size "
        "(0.875 = MAE's; 1 = the whole short side)",
    )
    tokens: str = option(
        "auto",
        "patches fed to the encoder: all; kept = the most-foreground --keep-fraction at their true "
        "positions (patch-8 SemMAE, paper Sec. 4.1); auto = kept when the checkpoint was pretrained on a "
        "kept fraction (--fg-keep < 1), else all",
        choices=("auto", "all", "kept"),
    )
    keep_fraction: float | None = option(
        None, "kept share of the patches (default: the checkpoint's --fg-keep, else 0.25)"
    )
    train_parts: str | None = option(
        None,
        "part cache of the training folder (semmae parts export): its foreground picks the kept "
        "patches; without caches the encoder's own CLS attention does",
    )
    val_parts: str | None = option(None, "part cache of the validation folder")

    def validate_common(self) -> None:
        if self.data is None and (self.train is None or self.val is None):
            raise UserError("give --data DIR (with train/ and val/) or both --train DIR and --val DIR")
        if self.data is not None and (self.train is not None or self.val is not None):
            raise UserError("give either --data or --train/--val, not both")
        if self.checkpoint is None and not self.random_init:
            raise UserError("give --checkpoint PATH, or --random-init for the untrained baseline")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not 0 < self.crop_pct <= 1:
            raise UserError(f"--crop-pct must be in (0, 1], got {self.crop_pct}")
        if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
            raise UserError(f"--keep-fraction must be in (0, 1], got {self.keep_fraction}")
        if (self.train_parts is None) != (self.val_parts is None):
            raise UserError(
                "give both --train-parts and --val-parts (part caches of the two folders), or neither"
            )
        if self.tokens == "all" and self.train_parts is not None:
            raise UserError("--train-parts/--val-parts pick kept patches; they have no use with --tokens all")

    def split_dirs(self) -> tuple[Path, Path]:
        if self.data is not None:
            root = Path(self.data)
            train, val = root / "train", root / "val"
            for p in (train, val):
                if not p.is_dir():
                    raise UserError(
                        f"--data {root} has no {p.name}/ folder (expected {root}/train and {root}/val)"
                    )
            return train, val
        return Path(self.train), Path(self.val)  # type: ignore[arg-type]


@dataclass
class LinprobeConfig(EvalCommonConfig):
    """``semmae linprobe``: defaults are MAE's linear-probe recipe (LARS, blr 0.1, 90 epochs, 10 warm-up)."""

    mode: str = option(
        "full",
        "full: augment through the encoder every epoch; fast: cached features",
        choices=("full", "fast"),
    )
    pool: str = option("token", "feature: class token or patch-token average (GAP)", choices=("token", "avg"))
    epochs: int = option(90, "training epochs")
    warmup_epochs: int = option(10, "linear warm-up epochs")
    blrs: list[float] = option(
        [0.025, 0.05, 0.1, 0.2, 0.4], "base learning rates swept in one pass (lr = blr * global batch / 256)"
    )
    optimizer: str = option("lars", "head optimizer", choices=("lars", "sgd"))
    weight_decay: float = option(0.0, "weight decay of the head weights")
    momentum: float = option(0.9, "optimizer momentum")
    crop_scale_min: float = option(0.08, "RandomResizedCrop minimum area (MAE linprobe: 0.08)")
    fast_views: int = option(0, "fast mode: augmented views per training image, besides the center crop")
    eval_every: int = option(1, "evaluate every N epochs (and at the end)")
    check_every: int = check_every_option()
    resume: str | None = resume_option("auto")
    overwrite: bool = overwrite_option()
    out: str = option("runs/linprobe", "run directory")

    def validate(self) -> None:
        self.validate_common()
        check_resume_overwrite(self.resume, self.overwrite)
        if self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise UserError(f"--warmup-epochs must be in [0, epochs], got {self.warmup_epochs}")
        if not self.blrs or any(b <= 0 for b in self.blrs):
            raise UserError(f"--blrs must be positive numbers, got {self.blrs}")
        if self.check_every < 1:
            raise UserError(f"--check-every must be >= 1, got {self.check_every}")
        if self.fast_views < 0:
            raise UserError(f"--fast-views must be >= 0, got {self.fast_views}")
        if not 0 < self.crop_scale_min <= 1:
            raise UserError(f"--crop-scale-min must be in (0, 1], got {self.crop_scale_min}")


@dataclass
class KnnConfig(EvalCommonConfig):
    """``semmae knn``: weighted kNN on frozen features (DINO protocol: k=20, T=0.07, cosine)."""

    k: int = option(20, "neighbours")
    temperature: float = option(0.07, "vote temperature T in exp(s/T)")
    pool: str = option("token", "feature: class token or patch-token average", choices=("token", "avg"))
    out: str = option("runs/knn", "run directory")
    overwrite: bool = overwrite_option()

    def validate(self) -> None:
        self.validate_common()
        if self.k < 1:
            raise UserError(f"--k must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")


@dataclass
class FinetuneConfig(EvalCommonConfig):
    """``semmae finetune``: defaults are MAE's ViT-B recipe (100 epochs, blr 5e-4, layer decay 0.65)."""

    epochs: int = option(100, "training epochs")
    warmup_epochs: int = option(5, "linear warm-up epochs")
    blr: float = option(5e-4, "base learning rate (lr = blr * global batch / 256)")
    min_lr: float = option(1e-6, "lr at the end of the cosine schedule")
    weight_decay: float = option(0.05, "AdamW weight decay (not on norms, biases, tokens)")
    layer_decay: float = option(0.65, "layer-wise lr decay")
    drop_path: float = option(0.1, "stochastic depth rate")
    global_pool: str = option(
        "avg", "classifier input: patch-token mean + fc_norm, or class token", choices=("avg", "token")
    )
    mixup: float = option(0.8, "Mixup alpha (0 = off)")
    cutmix: float = option(1.0, "CutMix alpha (0 = off)")
    mixup_prob: float = option(1.0, "probability of mixing a batch")
    mixup_switch_prob: float = option(0.5, "probability of CutMix instead of Mixup")
    smoothing: float = option(0.1, "label smoothing")
    auto_augment: str | None = option("rand-m9-mstd0.5-inc1", "timm RandAugment policy (empty = off)")
    reprob: float = option(0.25, "random erasing probability")
    ema: bool = option(False, "keep an EMA of the weights and evaluate it too")
    ema_decay: float = option(0.9999, "EMA decay per step")
    clip_grad: float | None = option(None, "gradient-norm clip (None = off)")
    batch_size: int = option(32, "images per process per step")
    check_every: int = check_every_option()
    resume: str | None = resume_option("auto")
    overwrite: bool = overwrite_option()
    out: str = option("runs/finetune", "run directory")

    def validate(self) -> None:
        self.validate_common()
        check_resume_overwrite(self.resume, self.overwrite)
        if self.tokens == "kept" or self.train_parts is not None or self.keep_fraction is not None:
            raise UserError(
                "fine-tuning feeds every patch, as the paper does (its Limitations: a small patch 'increases the "
                "computational cost in the fine-tuning stage'); --tokens kept, --keep-fraction and --train-parts are "
                "for linprobe and knn"
            )
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise UserError(
                f"need epochs >= 1 and 0 <= warmup-epochs <= epochs, got {self.epochs}/{self.warmup_epochs}"
            )
        if self.check_every < 1:
            raise UserError(f"--check-every must be >= 1, got {self.check_every}")
        if not 0 < self.layer_decay <= 1:
            raise UserError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if self.blr <= 0:
            raise UserError(f"--blr must be > 0, got {self.blr}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise UserError(f"--clip-grad must be > 0 (leave it unset for no clipping), got {self.clip_grad}")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise UserError(f"Mixup/CutMix need an even --batch-size, got {self.batch_size}")
        if not 0 <= self.drop_path < 1 or not 0 <= self.reprob <= 1 or not 0 <= self.smoothing < 1:
            raise UserError("--drop-path, --reprob and --smoothing must lie in [0, 1)")
