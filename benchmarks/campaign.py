"""Pre-registered, paired campaigns on the reproduction harness (issue 24): the command line of
:mod:`semmae_lab.campaign` (the plan, the pin, the gate, pairs, resume, the decision rule) and its report.

Usage::

    python benchmarks/campaign.py benchmarks/campaigns/mechanism-synth.yaml --work runs/campaign-mechanism
    python benchmarks/campaign.py PLAN --work DIR --status          # the status line only
    python benchmarks/campaign.py PLAN --work DIR --report-only     # rewrite the report from finished records

One ``--work`` per plan (bound at its first run); ``--status`` and ``--report-only`` use the plan the campaign
recorded, and say so in one line when the plan file differs (see :mod:`semmae_lab.campaign`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see repro.py: before torch loads

from semmae.cli import guard  # noqa: E402
from semmae_lab.campaign import (  # noqa: E402,F401
    Campaign,
    code_pin,
    gate_result,
    recorded_campaign,
    sha256,
)
from semmae_lab.plan import Arm, Plan, metric  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan", help="the plan file (benchmarks/campaigns/<name>.yaml), committed")
    ap.add_argument("--work", required=True, help="campaign folder (runs, caches, state); reuse it to resume")
    ap.add_argument("--out", default=str(HERE / "results"), help="where campaign-<name>.md/.json/.png go")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (resume later)")
    ap.add_argument("--status", action="store_true", help="print the status line and exit")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from finished records")
    return ap


def main(argv: list[str] | None = None, pin: dict | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        plan = Plan.load(args.plan)
        if args.status or args.report_only:  # the recorded plan and commit, not this checkout's
            c = recorded_campaign(
                plan, Path(args.work), Path(args.out), args.device, pin, REPO, need_state=args.report_only
            )
            if c.plan_note:
                print(c.plan_note, file=sys.stderr, flush=True)
            if args.report_only:
                c.summarise()
            print(c.status(), flush=True)
            return
        Campaign(plan, Path(args.work), Path(args.out), args.device, pin, repo=REPO).run(args.max_runs)

    return guard("benchmarks/campaign.py", run)


if __name__ == "__main__":
    sys.exit(main())
