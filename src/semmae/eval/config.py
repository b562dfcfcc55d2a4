"""Configs of the evaluation verbs (paper Sec. 4 protocols): ``semmae linprobe``, ``finetune`` and ``knn``, and the
data/encoder flags they share. No torch here: ``semmae <verb> --help`` reads these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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

    train: str | None = field(default=None, metadata={"help": "training ImageFolder (class folders)"})
    val: str | None = field(default=None, metadata={"help": "validation ImageFolder"})
    data: str | None = field(
        default=None, metadata={"help": "folder holding train/ and val/ (instead of --train/--val)"}
    )
    checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "encoder checkpoint (.pth/.safetensors, any layout) or run folder",
            "checkpoint": True,
        },
    )
    random_init: bool = field(
        default=False, metadata={"help": "evaluate an untrained encoder of the same architecture"}
    )
    init: str = init_scheme_field()
    arch: str | None = field(
        default=None, metadata={"help": "ViT name (e.g. vit_base_patch16); inferred from the checkpoint"}
    )
    num_heads: int | None = field(
        default=None, metadata={"help": "attention heads when the checkpoint cannot tell"}
    )
    img_size: int | None = field(
        default=None, metadata={"help": "evaluation resolution (default: the checkpoint's)"}
    )
    batch_size: int = field(default=256, metadata={"help": "images per process per step"})
    num_workers: int = field(default=8, metadata={"help": "data-loader workers per process"})
    precision: str = precision_option()
    out: str = field(default="runs/eval", metadata={"help": "run directory"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    crop_pct: float = field(
        default=0.875,
        metadata={
            "help": "evaluation view: resize the short side to img_size / crop_pct, center-crop img_size "
            "(0.875 = MAE's; 1 = the whole short side)"
        },
    )
    tokens: str = field(
        default="auto",
        metadata={
            "help": "patches fed to the encoder: all; kept = the most-foreground --keep-fraction at their true "
            "positions (patch-8 SemMAE, paper Sec. 4.1); auto = kept when the checkpoint was pretrained on a "
            "kept fraction (--fg-keep < 1), else all",
            "choices": ("auto", "all", "kept"),
        },
    )
    keep_fraction: float | None = field(
        default=None,
        metadata={"help": "kept share of the patches (default: the checkpoint's --fg-keep, else 0.25)"},
    )
    train_parts: str | None = field(
        default=None,
        metadata={
            "help": "part cache of the training folder (semmae parts export): its foreground picks the kept "
            "patches; without caches the encoder's own CLS attention does"
        },
    )
    val_parts: str | None = field(default=None, metadata={"help": "part cache of the validation folder"})

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

    mode: str = field(
        default="full",
        metadata={
            "help": "full: augment through the encoder every epoch; fast: cached features",
            "choices": ("full", "fast"),
        },
    )
    pool: str = field(
        default="token",
        metadata={"help": "feature: class token or patch-token average (GAP)", "choices": ("token", "avg")},
    )
    epochs: int = field(default=90, metadata={"help": "training epochs"})
    warmup_epochs: int = field(default=10, metadata={"help": "linear warm-up epochs"})
    blrs: list[float] = field(
        default_factory=lambda: [0.025, 0.05, 0.1, 0.2, 0.4],
        metadata={"help": "base learning rates swept in one pass (lr = blr * global batch / 256)"},
    )
    optimizer: str = field(default="lars", metadata={"help": "head optimizer", "choices": ("lars", "sgd")})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay of the head weights"})
    momentum: float = field(default=0.9, metadata={"help": "optimizer momentum"})
    crop_scale_min: float = field(
        default=0.08, metadata={"help": "RandomResizedCrop minimum area (MAE linprobe: 0.08)"}
    )
    fast_views: int = field(
        default=0, metadata={"help": "fast mode: augmented views per training image, besides the center crop"}
    )
    eval_every: int = field(default=1, metadata={"help": "evaluate every N epochs (and at the end)"})
    check_every: int = check_every_option()
    resume: str | None = resume_option("auto")
    overwrite: bool = overwrite_option()
    out: str = field(default="runs/linprobe", metadata={"help": "run directory"})

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

    k: int = field(default=20, metadata={"help": "neighbours"})
    temperature: float = field(default=0.07, metadata={"help": "vote temperature T in exp(s/T)"})
    pool: str = field(
        default="token",
        metadata={"help": "feature: class token or patch-token average", "choices": ("token", "avg")},
    )
    out: str = field(default="runs/knn", metadata={"help": "run directory"})

    def validate(self) -> None:
        self.validate_common()
        if self.k < 1:
            raise UserError(f"--k must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")


@dataclass
class FinetuneConfig(EvalCommonConfig):
    """``semmae finetune``: defaults are MAE's ViT-B recipe (100 epochs, blr 5e-4, layer decay 0.65)."""

    epochs: int = field(default=100, metadata={"help": "training epochs"})
    warmup_epochs: int = field(default=5, metadata={"help": "linear warm-up epochs"})
    blr: float = field(default=5e-4, metadata={"help": "base learning rate (lr = blr * global batch / 256)"})
    min_lr: float = field(default=1e-6, metadata={"help": "lr at the end of the cosine schedule"})
    weight_decay: float = field(
        default=0.05, metadata={"help": "AdamW weight decay (not on norms, biases, tokens)"}
    )
    layer_decay: float = field(default=0.65, metadata={"help": "layer-wise lr decay"})
    drop_path: float = field(default=0.1, metadata={"help": "stochastic depth rate"})
    global_pool: str = field(
        default="avg",
        metadata={
            "help": "classifier input: patch-token mean + fc_norm, or class token",
            "choices": ("avg", "token"),
        },
    )
    mixup: float = field(default=0.8, metadata={"help": "Mixup alpha (0 = off)"})
    cutmix: float = field(default=1.0, metadata={"help": "CutMix alpha (0 = off)"})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch"})
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "probability of CutMix instead of Mixup"})
    smoothing: float = field(default=0.1, metadata={"help": "label smoothing"})
    auto_augment: str | None = field(
        default="rand-m9-mstd0.5-inc1", metadata={"help": "timm RandAugment policy (empty = off)"}
    )
    reprob: float = field(default=0.25, metadata={"help": "random erasing probability"})
    ema: bool = field(default=False, metadata={"help": "keep an EMA of the weights and evaluate it too"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay per step"})
    clip_grad: float | None = field(default=None, metadata={"help": "gradient-norm clip (None = off)"})
    batch_size: int = field(default=32, metadata={"help": "images per process per step"})
    check_every: int = check_every_option()
    resume: str | None = resume_option("auto")
    overwrite: bool = overwrite_option()
    out: str = field(default="runs/finetune", metadata={"help": "run directory"})

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
