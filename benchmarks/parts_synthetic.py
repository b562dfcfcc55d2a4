"""Part quality on the synthetic part dataset, the demo's own way, over seeds (issue: semantic parts).

For each seed this runs the first three stages of ``semmae demo`` (:meth:`semmae.demo.pipeline.Demo.learn_parts`)
into ``<work>/seed<s>``: the synthetic set (that seed), the bootstrap encoder (a short random-masking MAE, or
``--encoder-checkpoint``, e.g. a ``semmae bootstrap`` one), part learning with the demo's recipe, export and
``parts eval`` against the ground-truth masks beside the baselines. A finished seed is skipped on a rerun. Prints
mean +- std over seeds and paired wins of the learned parts.

Usage::

    python benchmarks/parts_synthetic.py --work /tmp/parts_syn --seeds 0 1 2 [--budget small] [--style class]

``--smoke`` (the test suite's): one seed at the demo's ``micro`` budget, no loader workers, in ``--work`` (default:
a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see repro.py: spinning OpenMP threads on 2 shared cores

from semmae.demo.config import DemoConfig  # noqa: E402
from semmae.demo.pipeline import Demo  # noqa: E402
from semmae_lab.tables import part_table, part_wins  # noqa: E402

COLUMNS = ["nmi_image", "miou_image", "fg_iou", "fg_iou_image", "nmi", "parts_used", "largest_share"]


def demo_parts(
    work: Path, seed: int, budget: str, style: str, encoder_checkpoint: str = "", num_workers: int = 1
) -> dict:
    """The demo's part scores of one seed in ``work/seed<seed>``."""
    cfg = DemoConfig(
        out=str(work / f"seed{seed}"),
        budget=budget,
        seed=seed,
        style=style,
        encoder_checkpoint=encoder_checkpoint,
        device="cpu",
        num_workers=num_workers,
        progress=False,
    )
    return Demo(cfg).learn_parts(log=lambda line: print(line, flush=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="run folders (required but with --smoke)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="small")
    ap.add_argument("--style", default="class")
    ap.add_argument("--out", type=Path, default=None, help="also write the runs' metrics here (JSON)")
    ap.add_argument(
        "--encoder-checkpoint", default="", help="part encoder to use instead of the demo's MAE bootstrap"
    )
    ap.add_argument("--smoke", action="store_true", help="one seed, the micro budget (the test suite's)")
    args = ap.parse_args()
    if args.smoke:
        import tempfile

        args.seeds, args.budget = [0], "micro"
        if args.work is None:
            with tempfile.TemporaryDirectory() as tmp:
                args.work = Path(tmp)
                return report(args, 0)
    elif args.work is None:
        ap.error("the following arguments are required: --work")
    return report(args, 0 if args.smoke else 1)


def report(args: argparse.Namespace, num_workers: int) -> None:
    """Every seed's scores, then their table and paired wins (and ``--out``)."""
    runs = [
        demo_parts(args.work, s, args.budget, args.style, args.encoder_checkpoint, num_workers)
        for s in args.seeds
    ]
    if args.out:
        args.out.write_text(json.dumps({"seeds": args.seeds, "runs": runs}, indent=1))
    print(f"budget {args.budget}, style {args.style}, seeds {args.seeds}\n")
    print(part_table(runs, COLUMNS))
    print()
    print(part_wins(runs, COLUMNS))


if __name__ == "__main__":
    main()
