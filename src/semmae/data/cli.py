"""``semmae data synth``, ``semmae data check``, ``semmae data pack`` and ``semmae data subset``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from semmae.config import add_verb, add_verb_group, resolve_config
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

    data: str = field(
        default="",
        metadata={
            "help": "ImageFolder root (root/<class>/<image>), or a pack (every shard's checksum is verified)"
        },
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.data:
            raise UserError("--data is required")


@dataclass
class PackConfig:
    """Decode a dataset once into shards (``semmae.data.packed``)."""

    data: str = field(default="", metadata={"help": "ImageFolder root (root/<class>/<image>)"})
    out: str = field(default="", metadata={"help": "pack folder to write (an unfinished one is resumed)"})
    side: int = field(
        default=256,
        metadata={
            "help": "stored side in pixels (the whole image resized to side x side): the training --img-size for "
            "--augment flip, a bit more (e.g. 256 for 224) for crop-flip"
        },
    )
    parts: str | None = field(
        default=None,
        metadata={"help": "part cache of this dataset (`semmae parts export`) to pack alongside"},
    )
    shard_size: int = field(default=2048, metadata={"help": "images per shard"})
    num_workers: str = field(
        default="auto", metadata={"help": "decoding processes, or 'auto' (every available core but one)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace a finished pack at --out"})

    def validate(self) -> None:
        from semmae.data.workers import check_num_workers
        from semmae.errors import UserError

        if not self.data or not self.out:
            raise UserError("--data and --out are required")
        check_num_workers(self.num_workers)


@dataclass
class SubsetConfig:
    """A class-balanced, seeded subset of an ImageFolder (:mod:`semmae.data.subset`)."""

    data: str = field(
        default="", metadata={"help": "ImageFolder root (root/<class>/<image>), e.g. imagenette/train"}
    )
    out: str = field(default="", metadata={"help": "subset folder: missing, empty or an earlier subset"})
    per_class: int = field(default=0, metadata={"help": "images kept in every class"})
    seed: int = field(
        default=0, metadata={"help": "selection seed: the same seed keeps the same files everywhere"}
    )
    copy: bool = field(default=False, metadata={"help": "copy the images instead of symlinking them"})
    allow_fewer: bool = field(
        default=False,
        metadata={"help": "keep every image of a class smaller than --per-class instead of refusing"},
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.data or not self.out:
            raise UserError("--data and --out are required")
        if self.per_class < 1:
            raise UserError(f"--per-class must be >= 1, got {self.per_class}")


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
    from semmae.data.packed import is_pack, open_pack_checked

    cfg = resolve_config(CheckConfig, args)
    if is_pack(cfg.data):
        pack = open_pack_checked(cfg.data)  # a bad shard: UserError naming it (exit 2)
        print(
            f"{cfg.data}: pack of {len(pack)} images ({pack.side} px) in {len(pack.meta['shards'])} shards, "
            f"{pack.bytes_per_image:.0f} bytes/image; every checksum matches"
        )
        return 0
    report = check_dataset(cfg.data, progress=sys.stderr.isatty())
    print(report.format())
    return 1 if report.unreadable else 0


def run_pack(args: argparse.Namespace) -> int:
    from semmae.data.packed import pack_dataset
    from semmae.data.workers import available_cores, parse_num_workers

    cfg = resolve_config(PackConfig, args)
    workers = parse_num_workers(cfg.num_workers)
    if workers is None:
        workers = max(0, available_cores() - 1)
    report = pack_dataset(
        cfg.data,
        cfg.out,
        cfg.side,
        parts=cfg.parts,
        shard_size=cfg.shard_size,
        workers=workers,
        overwrite=cfg.overwrite,
        progress=sys.stderr.isatty(),
    )
    print(report.format())
    return 0


def run_subset(args: argparse.Namespace) -> int:
    from semmae.data.subset import make_subset

    cfg = resolve_config(SubsetConfig, args)
    print(make_subset(cfg.data, cfg.out, cfg.per_class, cfg.seed, cfg.copy, cfg.allow_fewer).format())
    return 0


def register(sub) -> None:
    actions = add_verb_group(
        sub,
        "data",
        "Datasets: generate the synthetic part set, check a folder, pack a dataset, take a subset",
        "Datasets: generate the synthetic part set, check a folder or a pack, pack a dataset, take a "
        "class-balanced subset",
    )
    add_verb(
        actions,
        "synth",
        SynthConfig,
        run_synth,
        "Write the synthetic part dataset (ImageFolder + ground-truth part masks)",
    )
    add_verb(
        actions,
        "check",
        CheckConfig,
        run_check,
        "Scan an image dataset for unreadable files before a long run",
        "Decode every image; list unreadable files (exit 1 if any) and unusual ones",
    )
    add_verb(
        actions,
        "pack",
        PackConfig,
        run_pack,
        "Decode a dataset once into shards (pixels + label + part cells) for fast pretraining",
        "Decode every image once to --side x --side and write WebDataset shards with its label and part-cache "
        "cells; resumable; `semmae pretrain --data PACK` reads it with no per-image decoding",
    )
    add_verb(
        actions,
        "subset",
        SubsetConfig,
        run_subset,
        "Take a class-balanced, seeded subset of an ImageFolder (symlinks or copies)",
        "Keep --per-class images of every class: each class's sorted file list shuffled with --seed, so the "
        "same files on every machine; symlinks to the source (or --copy) plus a marker that lets a rerun finish "
        "or replace the subset",
    )
