"""Every pre-registered campaign's paired differences on one axis (issue 39 item 5, issue 40 item 6).

Reads the committed campaign records ``benchmarks/results/campaign-*.json`` and keeps, per contrast on each plan's
primary metric (log. reg. top-1: arm - MAE in points, paired by seed), the pairs in, the mean, the 95 % CI and the
verdict of the pre-registered rule (none while a campaign is unfinished: numbers only). Then either

    python benchmarks/evidence_figure.py             # made benchmarks/results/evidence-campaigns.png

draws the forest plot (one row per contrast, mean and 95 % CI, a line at 0, the +-1-point equivalence margin
shaded), or

    python benchmarks/evidence_figure.py --summary   # made src/semmae/demo/evidence.json

writes the small summary the demo report's *Evidence* section draws the same figure from (it ships with the
package; ``tests/demo/test_evidence_summary.py`` regenerates it in memory and compares). Rerun both whenever a
campaign record changes (``benchmarks/campaign.py`` rewrites it as pairs finish).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = RESULTS / "evidence-campaigns.png"
COMMAND = "python benchmarks/evidence_figure.py --summary"


def _short(label: str) -> str:
    """The baseline's name without its setting: ``MAE (random masking)`` and ``MAE, patch 4 ...`` -> ``MAE``."""
    return label.split(",")[0].split(" (")[0].strip()


def summarize(results: Path = RESULTS) -> dict:
    """The summary of every ``campaign-*.json`` in ``results`` (by name, a follow-up after its first campaign;
    arms in plan order)."""
    rows = []
    for path in sorted(Path(results).glob("campaign-*.json"), key=lambda p: p.stem):
        record = json.loads(path.read_text())
        plan = record["plan"]
        metric = plan["primary"]
        labels = {arm["key"]: arm["label"] for arm in plan["arms"]}
        for arm in labels:
            st = record.get("stats", {}).get(arm, {}).get(metric)
            if not st or "ci95" not in st:
                continue  # the baseline, or an arm with fewer than two pairs in
            decision = record.get("decisions", {}).get(arm, {})
            complete = bool(record["complete"])
            rows.append(
                {
                    "campaign": plan["name"],
                    "record": path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name,
                    "arm": arm,
                    "baseline": plan["baseline"],
                    "contrast": f"{labels[arm]} - {_short(labels[plan['baseline']])}",
                    "metric": metric,
                    "n": st["n"],
                    "planned": plan["seeds"],
                    "complete": complete,
                    "mean": round(st["mean"], 4) + 0.0,  # no -0.0
                    "ci95": [round(v, 4) + 0.0 for v in st["ci95"]],
                    "verdict": decision.get("verdict") if complete else None,
                    "margin": plan["margin"],
                    "paper_effect": plan.get("paper_effect"),
                }
            )
    return {"generated_by": COMMAND, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from semmae.demo.evidence import EVIDENCE_FILE, forest_plot

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--summary", action="store_true", help=f"write {EVIDENCE_FILE.relative_to(ROOT)}")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the campaign-*.json records")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: the committed path)")
    args = ap.parse_args(argv)
    summary = summarize(args.results)
    if not summary["rows"]:
        print(f"evidence_figure: no campaign records in {args.results}", file=sys.stderr)
        return 1
    if args.summary:
        out = args.out or EVIDENCE_FILE
        out.write_text(json.dumps(summary, indent=1) + "\n")
    else:
        out = forest_plot(summary, args.out or FIGURE, dpi=130)
    print(f"wrote {out} ({len(summary['rows'])} contrasts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
