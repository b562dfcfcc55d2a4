"""``semmae data synth``, ``semmae data check``, ``semmae data pack``, ``semmae data subset`` and ``semmae data get``."""

from __future__ import annotations

import argparse
import sys

from semmae.config import add_verb, add_verb_group
from semmae.data.config import CheckConfig, GetConfig, PackConfig, SubsetConfig, SynthConfig


def run_synth(cfg: SynthConfig) -> int:
    from semmae.data.synth import make_synthetic_dataset

    info = make_synthetic_dataset(
        cfg.out, cfg.num_images, cfg.size, cfg.seed, cfg.val_fraction, cfg.num_classes, style=cfg.style
    )
    print(
        f"wrote {info['splits']['train']} train + {info['splits']['val']} val images of {len(info['classes'])} "
        f"classes with part masks to {cfg.out}"
    )
    return 0


def run_check(cfg: CheckConfig) -> int:
    from semmae.data.check import check_dataset
    from semmae.data.packed import is_pack, open_pack_checked

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


def run_pack(cfg: PackConfig) -> int:
    from semmae.data.packed import pack_dataset
    from semmae.data.workers import available_cores, parse_num_workers

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


def run_subset(cfg: SubsetConfig) -> int:
    from semmae.data.subset import make_subset

    report = make_subset(cfg.data, cfg.out, cfg.per_class, cfg.seed, cfg.copy, cfg.allow_fewer)
    if report.note:
        print(report.note, file=sys.stderr)
    print(report.format())
    return 0


def run_get(cfg: GetConfig) -> int:
    from semmae.data.get import get_dataset

    report = get_dataset(cfg.dataset, cfg.out or None, cfg.size, progress=sys.stderr.isatty())
    print(report.format())
    return 0


def register(sub) -> None:
    actions = add_verb_group(
        sub,
        "data",
        "Datasets: generate the synthetic part set, check a folder, pack a dataset, take a subset, download one",
        "Datasets: generate the synthetic part set, check a folder or a pack, pack a dataset, take a "
        "class-balanced subset, download Imagenette or CUB-200-2011",
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
    p = add_verb(
        actions,
        "get",
        GetConfig,
        run_get,
        "Download, verify and unpack Imagenette or CUB-200-2011 into the layout the other verbs read",
        "Download a public dataset with its md5 checked and unpack it: imagenette (--size 160|320|full) into "
        "OUT/train and OUT/val; cub into OUT/CUB_200_2011, converted to OUT/train and OUT/val plus keypoints.csv "
        "for `parts eval --keypoints OUT`. --out must be new, empty or an unfinished `data get` (resumed); a "
        "finished one is left as it is",
        epilog="examples:\n  semmae data get imagenette                 # -> data/imagenette2-160\n"
        "  semmae data get imagenette --size 320 --out /data/imagenette2-320\n"
        "  semmae data get cub                        # -> data/cub200",
    )
    p.add_argument(
        "dataset", nargs="?", metavar="DATASET", default=argparse.SUPPRESS, help="imagenette or cub"
    )
