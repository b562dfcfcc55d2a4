"""CLI verbs of evaluation: ``semmae linprobe``, ``finetune``, ``knn``, ``compare``, ``convert``."""

from __future__ import annotations

import argparse
import json
import sys

from semmae.config import add_verb, resolve_config


def _linprobe(args) -> int:
    from semmae.eval.linprobe import LinprobeConfig, edge_note, run_linprobe

    res = run_linprobe(resolve_config(LinprobeConfig, args))
    print(json.dumps({k: res[k] for k in ("top1", "top5", "best_blr", "best_on_edge")}))
    note = edge_note("semmae linprobe", res)
    if note:
        print(note, file=sys.stderr)
    return 0


def _finetune(args) -> int:
    from semmae.eval.finetune import FinetuneConfig, run_finetune

    res = run_finetune(resolve_config(FinetuneConfig, args))
    print(json.dumps({k: res[k] for k in ("top1", "top5", "best_epoch")}))
    return 0


def _knn(args) -> int:
    from semmae.eval.knn import KnnConfig, run_knn

    res = run_knn(resolve_config(KnnConfig, args))
    print(json.dumps({k: res[k] for k in ("top1", "top5")}))
    return 0


def _compare(args) -> int:
    from semmae.eval.compare import CompareConfig, run_compare

    run_compare(resolve_config(CompareConfig, args))
    return 0


def _convert(args) -> int:
    from semmae.eval.convert import convert_dataset

    print(json.dumps(convert_dataset(args.dataset, args.root, args.out, args.skip_missing)))
    return 0


def register(sub) -> None:
    # configs are imported lazily by the handlers; the dataclasses are cheap to import for the flags
    from semmae.eval.finetune import FinetuneConfig
    from semmae.eval.knn import KnnConfig
    from semmae.eval.linprobe import LinprobeConfig

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
