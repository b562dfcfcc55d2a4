"""The pre-registered campaigns' paired differences on one axis: a forest plot, one row per contrast on the primary
metric (arm - MAE, paired by seed), mean with its 95 % CI, 0 and the equivalence margin marked.

The numbers come from ``evidence.json`` beside this module, a small summary of the committed campaign records
(``benchmarks/results/campaign-*.json``) written by ``python benchmarks/evidence_figure.py --summary``;
``tests/demo/test_evidence_summary.py`` keeps it equal to those records. The demo report and
``benchmarks/evidence_figure.py`` draw the same figure with :func:`forest_plot`."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MultipleLocator  # noqa: E402

from semmae.utils.io import atomic_save_figure  # noqa: E402

EVIDENCE_FILE = Path(__file__).with_name("evidence.json")

#: the marker colour of each verdict of the decision rule (``semmae.eval.paired.decide``); ``None`` = interim
VERDICT_COLOURS = {
    "helps": "#1a7f37",
    "null": "#0969da",
    "hurts": "#cf222e",
    "inconclusive": "#444c56",
    None: "#8c959f",
}

#: the primary metrics' names in words
METRIC_NAMES = {
    "logreg_top1": "log. reg. top-1",
    "knn_top1": "kNN top-1",
    "linprobe_top1": "linear probe top-1",
}


def load_evidence(path: Path = EVIDENCE_FILE) -> dict:
    """The shipped summary: ``{"generated_by", "rows": [...]}``, one row per campaign contrast."""
    return json.loads(Path(path).read_text())


def pairs(row: dict) -> str:
    """``n = 12``, or ``15 of 24 pairs`` while a campaign is unfinished."""
    return f"n = {row['n']}" if row["complete"] else f"{row['n']} of {row['planned']} pairs"


def status(row: dict) -> str:
    """The verdict of a finished campaign, ``interim`` (numbers only) for an unfinished one."""
    return row["verdict"] if row["complete"] and row["verdict"] else "interim"


def row_label(row: dict) -> str:
    """Two lines: the campaign, its verdict and pairs; the contrast."""
    contrast = (
        row["contrast"].replace("alpha", "\N{GREEK SMALL LETTER ALPHA}").replace(" - ", " \N{MINUS SIGN} ")
    )
    return f"{row['campaign']}: {status(row)}, {pairs(row)}\n{contrast}"


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "\N{MINUS SIGN}")


def forest_plot(summary: dict, path: Path, dpi: int = 115) -> Path:
    """One horizontal row per contrast: mean (dot) and 95 % CI (bar) of the paired differences, a line at 0 and
    the equivalence margin shaded; numbers at the right. Writes ``path`` (PNG, 9 in wide: about 1,020 px at the
    default ``dpi``, the report's width) and returns it."""
    rows = summary["rows"]
    metrics = {r["metric"] for r in rows}
    metric = (
        METRIC_NAMES.get(next(iter(metrics)), next(iter(metrics))) if len(metrics) == 1 else "primary metric"
    )
    margins = {r["margin"] for r in rows}
    margin = margins.pop() if len(margins) == 1 else None
    height = 1.5 + 0.6 * len(rows)
    fig, ax = plt.subplots(figsize=(9, height), dpi=dpi)
    if margin:
        ax.axvspan(-margin, margin, color="#0969da", alpha=0.08, lw=0)
    ax.axvline(0, color="#222", lw=1)
    ys = list(range(len(rows)))[::-1]  # the first row on top
    colours = [VERDICT_COLOURS.get(r["verdict"] if r["complete"] else None, "#444c56") for r in rows]
    for y, row, colour in zip(ys, rows, colours):
        lo, hi = row["ci95"]
        ax.errorbar(
            row["mean"],
            y,
            xerr=[[row["mean"] - lo], [hi - row["mean"]]],
            fmt="o",
            ms=7,
            color=colour,
            mfc=colour if row["complete"] else "white",
            mew=1.8,
            elinewidth=2.2,
            capsize=5,
            capthick=1.5,
        )
        ax.text(
            1.02,
            y,
            f"{_signed(row['mean'])} [{_signed(lo)}, {_signed(hi)}]",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=10,
            family="monospace",
            color=colour,
        )
    for y, (above, below) in zip(ys[1:], zip(rows, rows[1:])):
        if above["campaign"] != below["campaign"]:
            ax.axhline(y + 0.5, color="#d0d7de", lw=0.8)
    ax.set_yticks(ys, [row_label(r) for r in rows], fontsize=10)
    for tick, colour in zip(ax.get_yticklabels(), colours):
        tick.set_color(colour)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    lows = [r["ci95"][0] for r in rows] + [-(margin or 0)]
    highs = [r["ci95"][1] for r in rows] + [margin or 0]
    pad = 0.05 * (max(highs) - min(lows))
    ax.set_xlim(min(lows) - pad, max(highs) + pad)
    if max(highs) - min(lows) <= 12:
        ax.xaxis.set_major_locator(MultipleLocator(1))  # the margin's edges on the grid
    ax.set_xlabel(f"arm \N{MINUS SIGN} MAE, {metric} (points), paired by seed", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=9.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.suptitle(
        "Pre-registered campaigns: does the arm beat MAE?", x=0.01, ha="left", fontsize=11, fontweight="bold"
    )
    band = f"; shaded: \N{PLUS-MINUS SIGN}{margin:g} point, the equivalence margin" if margin else ""
    fig.text(
        0.01,
        0.01,
        f"dot: mean; bar: 95 % CI; hollow dot: unfinished campaign (numbers only, no verdict){band}",
        ha="left",
        va="bottom",
        fontsize=9,
        color="#444c56",
    )
    fig.tight_layout(rect=(0, 0.25 / height, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path
