"""Reproduce the paper's Tables 1, 3 and 4 at small scale on real images (issue 9): the command line of the
reproduction harness, :mod:`semmae_lab.harness` (stages, grid, resume; the summary ``<stem>.md`` / ``.png`` /
``.json`` of :mod:`semmae_lab.repro_report`). A rerun with the same ``--work`` resumes.

Usage::

    python benchmarks/repro.py --preset cpu                         # ~90 min on 2 CPU cores
    python benchmarks/repro.py --preset gpu --device cuda           # one H100/H200, ~10 min
    python benchmarks/repro.py --preset cpu --only table4 --seeds 1 # one table, one seed
    python benchmarks/repro.py --preset anchor --only anchor        # the issue's MAE anchor (random masking)
    python benchmarks/repro.py --preset cpu --only flip             # MAE and SemMAE with SemMAE's flip-only augmentation
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Before torch loads: with the default (active) OpenMP wait policy, 2 threads on a shared 2-core machine spin
# against each other; measured here under load, a tiny-ViT training step ran at 5.7 img/s with 2 threads vs 51
# img/s with OMP_WAIT_POLICY=PASSIVE (and the fast linear probe at 4.2 vs 0.04 s per epoch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from semmae.cli import guard  # noqa: E402
from semmae.errors import UserError  # noqa: E402
from semmae_lab import repro_report  # noqa: E402,F401  (the summary, for callers of this script)
from semmae_lab.grid import GRID, TABLES, select_grid  # noqa: E402,F401
from semmae_lab.harness import Harness  # noqa: E402
from semmae_lab.preset import Preset  # noqa: E402
from semmae_lab.subsets import split_subset  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# what `semmae data get imagenette` writes when run in the repository's root; --data for any other folder
DEFAULT_DATA = REPO / "data" / "imagenette2-160"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", help="cpu | gpu | anchor | smoke, or a YAML path")
    ap.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="ImageFolder root with train/ and val/ (default: data/imagenette2-160, from `semmae data get imagenette`)",
    )
    ap.add_argument("--seeds", type=int, default=0, help="seeds per configuration (0: the preset's)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--only", nargs="+", help=f"tables ({', '.join(TABLES)}) or configuration keys")
    ap.add_argument("--out", default=str(HERE / "results"), help="where <date>-<preset>-<device>.* go")
    ap.add_argument("--work", default="", help="run folder (default runs/repro-<preset>); reuse it to resume")
    ap.add_argument("--encoder-checkpoint", default="", help="iBOT/DINO/MAE weights for part learning")
    ap.add_argument(
        "--encoder", default="", help="timm architecture of --encoder-checkpoint if it cannot tell"
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument(
        "--summarise-only", action="store_true", help="only rewrite the summary from the finished runs' JSON"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        preset = Preset.load(args.preset)
        if args.encoder_checkpoint and not Path(args.encoder_checkpoint).is_file():
            raise UserError(f"--encoder-checkpoint {args.encoder_checkpoint} does not exist")
        args.work = args.work or str(REPO / "runs" / f"repro-{preset.name}")
        Harness(args, preset, repo=REPO).run(args.summarise_only)

    return guard(
        "benchmarks/repro.py", run
    )  # as the CLI: a failed stage is one line, its traceback in error.log


if __name__ == "__main__":
    sys.exit(main())
