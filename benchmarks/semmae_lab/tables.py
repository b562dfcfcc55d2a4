"""Markdown tables over seeds for the pipelines' summaries: ``mean ± std`` cells, and part-quality tables of
``part_metrics.json`` files (``semmae parts eval``) with the learned parts' paired wins over each baseline."""

from __future__ import annotations

import statistics

#: the methods of ``semmae parts eval``'s metrics, in table order
PART_METHODS = ("learned", "attention", "kmeans", "spatial", "ceiling")
#: the baselines the learned parts must beat
PART_BASELINES = ("attention", "kmeans", "spatial")


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± std`` (sample std) over seeds; one value: the value; none: n/a."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def part_table(runs: list[dict], columns: list[str]) -> str:
    """One row per method, ``mean ± std`` over the runs (seeds) per column."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in PART_METHODS:
        if not any(m in r for r in runs):
            continue
        cells = [mean_std([r[m][c] for r in runs if m in r and c in r[m]], digits=3) for c in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def part_wins(runs: list[dict], columns: list[str]) -> str:
    """For each baseline and column: on how many seeds learned > baseline, and the mean paired gap."""
    lines = ["| learned vs | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in PART_BASELINES:
        if not any(m in r for r in runs):
            continue
        cells = []
        for c in columns:
            gaps = [r["learned"][c] - r[m][c] for r in runs if c in r.get(m, {}) and c in r["learned"]]
            won = sum(g > 0 for g in gaps)
            cells.append(f"{won}/{len(gaps)} ({statistics.mean(gaps):+.3f})" if gaps else "n/a")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
