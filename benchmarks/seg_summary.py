"""Summarise `semmae segment train` runs into a mean +- std table (issue 7's pretrained-vs-random comparisons).

    python benchmarks/seg_summary.py runs/seg-transfer 'seg_{arm}_s{seed}' mae semmae rand

prints one Markdown row per arm (mIoU / mAcc / aAcc, mean +- sample std over the seeds found), the per-seed mIoU,
and the paired mIoU difference of every arm to the last one (the reference, e.g. random init) over shared seeds.

``--smoke`` (the test suite's): made-up results of two arms over two seeds in a temporary folder, summarised with
``--per-class``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semmae_lab.tables import mean_std

METRICS = ("miou", "macc", "aacc")


def collect(root: Path, pattern: str, arm: str) -> dict[int, dict]:
    """``{seed: results.json}`` for every finished run ``root / pattern.format(arm=arm, seed=seed)``."""
    found = {}
    for seed in range(100):
        f = root / pattern.format(arm=arm, seed=seed) / "results.json"
        if f.exists():
            found[seed] = json.loads(f.read_text())
    return found


def smoke_runs(args: argparse.Namespace, root: Path) -> None:
    """Made-up ``results.json`` of arms ``mae`` and ``rand``, seeds 0 and 1, under ``root``; ``args`` set to read
    them (with ``--per-class``)."""
    for k, arm in enumerate(("mae", "rand")):
        for seed in (0, 1):
            run = root / f"seg_{arm}_s{seed}"
            run.mkdir(parents=True)
            miou = 30.0 - 10 * k + seed
            per_class = [{"name": n, "iou": miou + i} for i, n in enumerate(("bg", "part"))]
            res = {"miou": miou, "macc": miou + 5, "aacc": miou + 20, "per_class": per_class}
            (run / "results.json").write_text(json.dumps(res))
    args.root, args.pattern, args.arms, args.per_class = root, "seg_{arm}_s{seed}", ["mae", "rand"], True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, nargs="?")
    ap.add_argument("pattern", nargs="?", help="run folder name with {arm} and {seed}")
    ap.add_argument("arms", nargs="*", help="arms to compare; the last is the reference of the paired deltas")
    ap.add_argument("--per-class", action="store_true", help="also print per-class IoU (mean ± std) per arm")
    ap.add_argument("--smoke", action="store_true", help="summarise made-up runs (the test suite's)")
    args = ap.parse_args()
    if args.smoke:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            smoke_runs(args, Path(tmp))
            return summarise(args)
    if not args.arms:
        ap.error("ROOT, PATTERN and at least one arm are required")
    return summarise(args)


def summarise(args: argparse.Namespace) -> None:
    """The table of ``args.arms`` (and per-class IoU with ``args.per_class``), on stdout."""
    runs = {a: collect(args.root, args.pattern, a) for a in args.arms}
    ref = args.arms[-1]
    print("| arm | seeds | mIoU | mAcc | aAcc | per-seed mIoU | paired ΔmIoU vs " + ref + " |")
    print("|---|---|---|---|---|---|---|")
    for a in args.arms:
        r = runs[a]
        seeds = sorted(r)
        cells = [mean_std([r[s][m] for s in seeds]) for m in METRICS]
        per_seed = ", ".join(f"{r[s]['miou']:.2f}" for s in seeds)
        shared = [s for s in seeds if s in runs[ref]]
        deltas = [r[s]["miou"] - runs[ref][s]["miou"] for s in shared]
        delta = (
            "—" if a == ref else f"{mean_std(deltas)} ({sum(d > 0 for d in deltas)}/{len(deltas)} seeds > 0)"
        )
        print(f"| {a} | {len(seeds)} | " + " | ".join(cells) + f" | {per_seed} | {delta} |")
    if args.per_class:
        names = [c["name"] for c in next(iter(next(iter(runs.values())).values()))["per_class"]]
        print("\n| class | " + " | ".join(args.arms) + " |")
        print("|---|" + "---|" * len(args.arms))
        for i, name in enumerate(names):
            cells = [mean_std([r["per_class"][i]["iou"] or 0.0 for r in runs[a].values()]) for a in args.arms]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
