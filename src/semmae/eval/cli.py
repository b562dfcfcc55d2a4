"""CLI verbs of evaluation: ``semmae linprobe``, ``finetune``, ``knn``, ``compare``, ``convert``."""

from __future__ import annotations

import argparse
import json
import sys

from semmae.config import add_verb
from semmae.eval.config import FinetuneConfig, KnnConfig, LinprobeConfig


def _print_metrics(res: dict, keys: tuple[str, ...]) -> None:
    """One JSON line of the headline metrics; top-5 only where it was recorded (more than 5 classes)."""
    print(json.dumps({k: res[k] for k in keys if res.get(k) is not None or k != "top5"}))


def _linprobe(cfg: LinprobeConfig) -> int:
    from semmae.eval.linprobe import edge_note, run_linprobe

    res = run_linprobe(cfg)
    _print_metrics(res, ("top1", "top5", "best_blr", "best_on_edge"))
    note = edge_note("semmae linprobe", res)
    if note:
        print(note, file=sys.stderr)
    return 0


def _finetune(cfg: FinetuneConfig) -> int:
    from semmae.eval.finetune import run_finetune

    res = run_finetune(cfg)
    _print_metrics(res, ("top1", "top5", "best_epoch"))
    return 0


def _knn(cfg: KnnConfig) -> int:
    from semmae.eval.knn import run_knn

    res = run_knn(cfg)
    _print_metrics(res, ("top1", "top5"))
    return 0


def _compare(cfg) -> int:  # a semmae.eval.compare.CompareConfig
    from semmae.eval.compare import run_compare

    run_compare(cfg)
    return 0


def _convert(args) -> int:
    from semmae.data.convert import convert_release

    print(json.dumps(convert_release(args.dataset, args.root, args.out, args.skip_missing)))
    return 0


def register(sub) -> None:
    add_verb(
        sub,
        "linprobe",
        LinprobeConfig,
        _linprobe,
        "Linear probe on a frozen encoder (MAE protocol; full or fast cached-feature mode, lr sweep)",
    )
    add_verb(
        sub,
        "finetune",
        FinetuneConfig,
        _finetune,
        "Fine-tune an encoder (MAE recipe: layer decay, drop path, Mixup/CutMix, RandAugment, EMA)",
    )
    add_verb(
        sub,
        "knn",
        KnnConfig,
        _knn,
        "k-NN accuracy on frozen features (cosine, k=20, T=0.07, temperature-weighted votes)",
    )

    from semmae.eval.compare import CompareConfig

    p = add_verb(
        sub,
        "compare",
        CompareConfig,
        _compare,
        "Table of several runs' results (knn, linprobe, finetune, segment, online kNN), mean ± std over seeds",
        epilog="runs named <name>-seed<N> (or a parent so named) form one row: "
        "semmae compare runs/mae-seed0 runs/mae-seed1 runs/semmae-seed0 --csv table.csv",
    )
    p.add_argument("runs", nargs="*", metavar="RUN", default=argparse.SUPPRESS, help="run folders")

    text = "Convert CUB-200-2011 / Stanford Cars / iNaturalist 2019 releases to ImageFolder trees (symlinks)"
    p = sub.add_parser("convert", help=text, description=text)
    p.add_argument("dataset", choices=("cub", "cars", "inat"), help="which release layout")
    p.add_argument("--root", required=True, help="the extracted release folder")
    p.add_argument("--out", required=True, help="output folder; gets train/ and val/ of class folders")
    p.add_argument("--skip-missing", action="store_true", help="leave out listed images that are missing")
    p.set_defaults(func=_convert)
