"""Part quality on real birds (CUB-200-2011 keypoints, ``../shared/data/cub200_parts``), paper Table 4 style.

1. ``prepare``   - ImageFolder views of the official train / test halves (symlinks ``<split>/images/<file>``, so
                   relative paths match keypoints.csv's ``file`` column) and bounding-box masks (1 = inside the box);
2. ``bootstrap`` - the part encoder: a random-masking MAE on the train half (or ``--encoder-checkpoint``);
3. per seed      - ``semmae parts train`` (preset ``parts/tiny_cpu``), ``parts export`` of the test half at the
                   encoder grid, ``parts eval --keypoints --masks`` (learned vs raw attention, k-means, spatial
                   split, grid ceiling);
4. summary       - ``<out>.md`` / ``<out>.json``: mean +- std over seeds, and paired wins of learned parts.

Usage::

    python benchmarks/parts_cub.py --work /tmp/cub --seeds 0 1 --out benchmarks/results/parts-cub200
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see repro.py: spinning OpenMP threads on 2 shared cores

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import parts_summary  # noqa: E402

from semmae.cli import run_stage, stage_config  # noqa: E402
from semmae.engine.checkpoint import CheckpointManager  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "cub200_parts"
COLUMNS = ["kp_nmi", "kp_ari", "fg_iou_image", "miou_image", "fg_iou", "parts_used", "largest_share"]


def prepare(data: Path, work: Path) -> dict[str, Path]:
    """Symlinked train/test ImageFolders and box masks (idempotent)."""
    from PIL import Image

    roots = {s: work / f"cub_{s}" for s in ("train", "test")}
    masks = work / "cub_bbox_masks"
    with open(data / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        link = roots[row["split"]] / row["file"]
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data / row["file"]).resolve())
        mask = (masks / row["file"]).with_suffix(".png")
        if not mask.exists():
            w, h = int(row["width"]), int(row["height"])
            x0, y0 = float(row["bbox_x"]), float(row["bbox_y"])
            x1, y1 = x0 + float(row["bbox_w"]), y0 + float(row["bbox_h"])
            img = Image.new("L", (w, h), 0)
            img.paste(1, (round(x0), round(y0), round(min(x1, w)), round(min(y1, h))))
            mask.parent.mkdir(parents=True, exist_ok=True)
            img.save(mask)
    return {**roots, "masks": masks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "parts-cub200")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--num-parts", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=48)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--bootstrap-epochs", type=int, default=10)
    ap.add_argument("--parts-epochs", type=int, default=20)
    ap.add_argument("--encoder-checkpoint", type=Path, default=None)
    ap.add_argument("--tag", default="", help="suffix of the part run folders (ablations side by side)")
    ap.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="more `parts train` config fields (ablations), e.g. similarity=dot div_weight=0.03",
    )
    args = ap.parse_args()
    extra = dict(item.split("=", 1) for item in args.extra)
    paths = prepare(args.data, args.work)
    common = {"num_workers": 1, "device": "cpu"}

    enc = args.encoder_checkpoint
    if enc is None:
        boot = args.work / "bootstrap"
        cfg = stage_config(
            "pretrain",
            "pretrain/tiny_cpu",
            data=str(paths["train"]),
            out=str(boot),
            img_size=args.img_size,
            patch_size=args.patch_size,
            masking="random",
            epochs=args.bootstrap_epochs,
            warmup_epochs=1,
            batch_size=64,
            lr=1e-3,
            resume="auto",
            progress=False,
            **common,
        )
        run_stage("pretrain", cfg)
        enc = CheckpointManager(boot).latest()
    grid = args.img_size // args.patch_size
    metrics = []
    for seed in args.seeds:
        run = args.work / f"parts{args.num_parts}{args.tag}-seed{seed}"
        train = stage_config(
            "parts train",
            "parts/tiny_cpu",
            data=str(paths["train"]),
            out=str(run),
            encoder_checkpoint=str(enc),
            img_size=args.img_size,
            num_parts=args.num_parts,
            epochs=args.parts_epochs,
            seed=seed,
            resume="auto",
            **common,
            **extra,
        )
        run_stage("parts train", train)
        cache = run / "test.parts"
        if not cache.exists():
            export = stage_config(
                "parts export",
                data=str(paths["test"]),
                checkpoint=str(run / "checkpoint.pth"),
                grid=grid,
                out=str(cache),
                **common,
            )
            run_stage("parts export", export)
        out = run / "part_metrics.json"
        if not out.exists():
            evaluation = stage_config(
                "parts eval",
                data=str(paths["test"]),
                cache=str(cache),
                keypoints=str(args.data),
                masks=str(paths["masks"]),
                eval_size=120,
                out=str(out),
                **common,
            )
            run_stage("parts eval", evaluation)
        metrics.append(json.loads(out.read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"seeds": args.seeds, "runs": metrics}, indent=1))
    md = [
        f"N = {args.num_parts}, {len(args.seeds)} seed(s) {args.seeds}; encoder {enc}",
        "",
        parts_summary.table(metrics, COLUMNS),
        "",
        parts_summary.wins(metrics, COLUMNS),
    ]
    print("\n".join(md))


if __name__ == "__main__":
    main()
