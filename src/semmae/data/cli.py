"""``semmae data synth`` and ``semmae data check``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from semmae.config import add_config_args, resolve_config
from semmae.data.synth import STYLES


@dataclass
class SynthConfig:
    """The synthetic part dataset (:mod:`semmae.data.synth`)."""

    out: str = field(default="", metadata={"help": "output folder (must not hold a dataset already)"})
    num_images: int = field(default=500, metadata={"help": "images in total, train + val"})
    size: int = field(default=64, metadata={"help": "image side in pixels"})
    seed: int = field(default=0, metadata={"help": "random seed: the same seed writes the same files"})
    val_fraction: float = field(default=0.2, metadata={"help": "share of each class written to val/"})
    num_classes: int = field(default=5, metadata={"help": "object classes to use (1-5)"})
    style: str = field(
        default="class",
        metadata={
            "help": "part colouring: 'class' = a fixed hue and texture per (class, part type), so parts and "
            "classes show in their colours; 'random' = a fresh look per part type in every image, so only shape "
            "and layout identify them (a harder test of learned representations)",
            "choices": STYLES,
        },
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.out:
            raise UserError("--out is required")
        if not 1 <= self.num_classes <= 5:
            raise UserError(f"--num-classes must be 1..5, got {self.num_classes}")


@dataclass
class CheckConfig:
    """Scan a dataset for unreadable and unusual images."""

    data: str = field(default="", metadata={"help": "ImageFolder root (root/<class>/<image>)"})

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.data:
            raise UserError("--data is required")


def run_synth(args: argparse.Namespace) -> int:
    from semmae.data.synth import make_synthetic_dataset

    cfg = resolve_config(SynthConfig, args)
    info = make_synthetic_dataset(
        cfg.out, cfg.num_images, cfg.size, cfg.seed, cfg.val_fraction, cfg.num_classes, style=cfg.style
    )
    print(
        f"wrote {info['splits']['train']} train + {info['splits']['val']} val images of {len(info['classes'])} "
        f"classes with part masks to {cfg.out}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from semmae.data.check import check_dataset

    cfg = resolve_config(CheckConfig, args)
    report = check_dataset(cfg.data, progress=sys.stderr.isatty())
    print(report.format())
    return 1 if report.unreadable else 0


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="Datasets: generate the synthetic part set, check a folder",
        description="Datasets: generate the synthetic part set, check a folder",
    )
    actions = p.add_subparsers(dest="action", metavar="<action>")
    actions.required = True
    s = actions.add_parser(
        "synth",
        help="Write the synthetic part dataset (ImageFolder + ground-truth part masks)",
        description="Write the synthetic part dataset (ImageFolder + ground-truth part masks)",
    )
    add_config_args(s, SynthConfig)
    s.set_defaults(func=run_synth)
    c = actions.add_parser(
        "check",
        help="Scan an image dataset for unreadable files before a long run",
        description="Decode every image; list unreadable files (exit 1 if any) and unusual ones",
    )
    add_config_args(c, CheckConfig)
    c.set_defaults(func=run_check)
