"""Tables of ``part_metrics.json`` files over seeds: mean +- std per method and metric, and how often the learned
parts beat each baseline (paired by seed). Used by parts_synthetic.py and parts_cub.py."""

from __future__ import annotations

import statistics

from seg_summary import mean_std  # sibling script (benchmarks/ is on sys.path when these scripts run)

METHODS = ("learned", "attention", "kmeans", "spatial", "ceiling")


def table(runs: list[dict], columns: list[str]) -> str:
    """Markdown: one row per method, ``mean ± std`` over the runs (seeds) per column."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in METHODS:
        if not any(m in r for r in runs):
            continue
        cells = [mean_std([r[m][c] for r in runs if m in r and c in r[m]], digits=3) for c in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wins(runs: list[dict], columns: list[str]) -> str:
    """Markdown: for each baseline and column, on how many seeds learned > baseline, and the mean paired gap."""
    lines = ["| learned vs | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in ("attention", "kmeans", "spatial"):
        if not any(m in r for r in runs):
            continue
        cells = []
        for c in columns:
            gaps = [r["learned"][c] - r[m][c] for r in runs if c in r.get(m, {}) and c in r["learned"]]
            won = sum(g > 0 for g in gaps)
            cells.append(f"{won}/{len(gaps)} ({statistics.mean(gaps):+.3f})" if gaps else "n/a")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
