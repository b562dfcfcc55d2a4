"""Part quality on real birds (CUB-200-2011 keypoints; ``--data``: see ``DEFAULT_DATA``), paper Table 4 style.

1. ImageFolder views of the official train / test halves and bounding-box masks
   (:func:`semmae_lab.part_runs.cub_folders`);
2. the part encoder: a random-masking MAE on the train half (or ``--encoder-checkpoint``);
3. per seed: ``semmae parts train`` (preset ``parts/tiny_cpu``), ``parts export`` of the test half at the encoder
   grid, ``parts eval --keypoints --masks`` (learned vs raw attention, k-means, spatial split, grid ceiling)
   (:func:`semmae_lab.part_runs.learn_and_score`);
4. summary: ``<out>.json`` and, on stdout, mean +- std over seeds and paired wins of learned parts.

Usage::

    python benchmarks/parts_cub.py --work /tmp/cub --seeds 0 1 --out benchmarks/results/parts-cub200

``--smoke`` (the test suite's): a tiny fake of the CUB layout (64 train + 8 test generated images, 3 keypoints
each, :func:`_helpers_images.write_fake_cub`), 32 px with patch 8, one epoch of each training, one seed, in
``--work`` (default: a temporary folder); the summary goes to ``--out`` only if given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see repro.py: spinning OpenMP threads on 2 shared cores

from semmae_lab.part_runs import PartRun, cub_folders, learn_and_score, mae_encoder  # noqa: E402
from semmae_lab.tables import part_table, part_wins  # noqa: E402

HERE = Path(__file__).resolve().parent
# The developers' machine path, not a user default: a 2,000-image, 128-px CUB-200-2011 subset with images.csv
# (file, split train|test, width, height, bbox_*) and keypoints.csv, `file` relative to the folder. A user passes
# --data to a folder in that layout (`semmae data get cub` writes keypoints.csv for `parts eval`, not this layout).
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "cub200_parts"
COLUMNS = ["kp_nmi", "kp_ari", "fg_iou_image", "miou_image", "fg_iou", "parts_used", "largest_share"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=None, help="run folders (required but with --smoke)")
    ap.add_argument(
        "--out", type=Path, default=None, help="summary JSON (default benchmarks/results/parts-cub200)"
    )
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
    ap.add_argument("--smoke", action="store_true", help="a fake CUB, tiny sizes (the test suite's)")
    args = ap.parse_args()
    if not args.smoke:
        if args.work is None:
            ap.error("the following arguments are required: --work")
        return score(args, args.out or HERE / "results" / "parts-cub200")
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(HERE))
        from _helpers_images import write_fake_cub

        args.work = args.work or Path(tmp)
        args.data = write_fake_cub(args.work / "fake_cub", train=64, test=8, size=40)
        args.seeds, args.img_size, args.patch_size = [0], 32, 8
        args.bootstrap_epochs, args.parts_epochs = 1, 1
        args.extra = [*args.extra, "batch_size=16"]
        return score(args, args.out, num_workers=0)


def score(args: argparse.Namespace, out: Path | None, num_workers: int = 1) -> None:
    """The encoder, part learning and scoring per seed; the summary (JSON at ``out``, if any; stdout)."""
    paths = cub_folders(args.data, args.work)
    run = PartRun(
        train=str(paths["train"]),
        test=str(paths["test"]),
        img_size=args.img_size,
        patch_size=args.patch_size,
        num_parts=args.num_parts,
        parts_epochs=args.parts_epochs,
        keypoints=str(args.data),
        masks=str(paths["masks"]),
        parts_fields=dict(item.split("=", 1) for item in args.extra),
        common={"num_workers": num_workers, "device": "cpu"},
    )
    enc = args.encoder_checkpoint or mae_encoder(run, args.work / "bootstrap", args.bootstrap_epochs)
    metrics = [
        learn_and_score(run, enc, args.work / f"parts{args.num_parts}{args.tag}-seed{seed}", seed)
        for seed in args.seeds
    ]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps({"seeds": args.seeds, "runs": metrics}, indent=1))
    head = f"N = {args.num_parts}, {len(args.seeds)} seed(s) {args.seeds}; encoder {enc}"
    print("\n".join([head, "", part_table(metrics, COLUMNS), "", part_wins(metrics, COLUMNS)]))


if __name__ == "__main__":
    main()
