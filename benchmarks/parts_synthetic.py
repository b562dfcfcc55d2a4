"""Part quality on the synthetic part dataset, the demo's own way, over seeds (issue: semantic parts).

For each seed this runs the first three stages of ``semmae demo`` (same code: :class:`semmae.demo.pipeline.Demo`)
into ``<work>/seed<s>``: the synthetic set (that seed), the bootstrap encoder (a short random-masking MAE, or
``--encoder-checkpoint``, e.g. a ``semmae bootstrap`` one), part
learning with the demo's recipe, export and ``parts eval`` against the ground-truth masks beside the baselines.
A finished seed is skipped on a rerun. Prints mean +- std over seeds and paired wins of the learned parts.

Usage::

    python benchmarks/parts_synthetic.py --work /tmp/parts_syn --seeds 0 1 2 [--budget small] [--style class]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see repro.py: spinning OpenMP threads on 2 shared cores

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import parts_summary  # noqa: E402

from semmae.demo.pipeline import Demo, DemoConfig  # noqa: E402

COLUMNS = ["nmi_image", "miou_image", "fg_iou", "fg_iou_image", "nmi", "parts_used", "largest_share"]


def run_seed(work: Path, seed: int, budget: str, style: str, encoder_checkpoint: str = "") -> dict:
    demo = Demo(
        DemoConfig(
            out=str(work / f"seed{seed}"),
            budget=budget,
            seed=seed,
            style=style,
            encoder_checkpoint=encoder_checkpoint,
            device="cpu",
            num_workers=1,
            progress=False,
        )
    )
    metrics = demo.out / "parts" / "part_metrics.json"
    if not metrics.exists():
        demo.out.mkdir(parents=True, exist_ok=True)
        demo.check_same_setup([])  # the folder is this script's own: only the settings are checked
        for stage in demo.stages()[:3]:  # data, bootstrap, parts
            t0 = time.perf_counter()
            stage.run()
            print(f"seed {seed}: {stage.name} {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(metrics.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="small")
    ap.add_argument("--style", default="class")
    ap.add_argument("--out", type=Path, default=None, help="also write the runs' metrics here (JSON)")
    ap.add_argument(
        "--encoder-checkpoint", default="", help="part encoder to use instead of the demo's MAE bootstrap"
    )
    args = ap.parse_args()
    runs = [run_seed(args.work, s, args.budget, args.style, args.encoder_checkpoint) for s in args.seeds]
    if args.out:
        args.out.write_text(json.dumps({"seeds": args.seeds, "runs": runs}, indent=1))
    print(f"budget {args.budget}, style {args.style}, seeds {args.seeds}\n")
    print(parts_summary.table(runs, COLUMNS))
    print()
    print(parts_summary.wins(runs, COLUMNS))


if __name__ == "__main__":
    main()
