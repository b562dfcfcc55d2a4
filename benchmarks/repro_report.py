"""Summary of a reproduction grid (``benchmarks/repro.py``): ``<stem>.md`` (mean +- std per table row next to the
paper's numbers), ``<stem>.png`` (bar chart) and ``<stem>.json`` (every per-run record), rebuilt from the per-run
JSON files after every run so that a partial grid is readable.

Paper numbers (ImageNet-1k, ViT-B, 800 epochs): only what could be read from a stored source is filled in:
the arXiv abstract of 2206.10207 (ar5iv.labs.arxiv.org/html/2206.10207: "SemMAE achieves 84.5% fine-tuning
accuracy on ImageNet-1k, which outperforms the vanilla MAE by 1.4%") and the official release's README
(github.com/ucasligang/SemMAE: fine-tuned checkpoints, "reference ImageNet accuracy 83.352 | 84.444" for ViT-B/16
and ViT-B/8). The per-row numbers of Tables 3 and 4 were not found in any stored copy of the paper; those cells read
"n/a" rather than a guess.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

# (table, row label) -> (linear probe, fine-tune) in percent; None = not found in a citable source.
PAPER: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("table1", "SemMAE, patch P"): (None, 83.35),  # official README, ViT-B/16 fine-tuned checkpoint (83.352)
    ("table1", "SemMAE, patch P/2 + keep"): (None, 84.5),  # abstract; official README ViT-B/8: 84.444
}
PAPER_SOURCE = (
    "Paper column: fine-tune top-1 on ImageNet-1k, ViT-B, 800 epochs. SemMAE ViT-B/16: 83.35 (official release "
    "README, github.com/ucasligang/SemMAE, fine-tuned checkpoint 'reference ImageNet accuracy 83.352'); SemMAE "
    "ViT-B/8 + keep 1/4: 84.5 (arXiv 2206.10207 abstract; README: 84.444). The abstract says this 'outperforms the "
    "vanilla MAE by 1.4%' without naming the MAE row. Tables 3 and 4 (and the linear-probe column) could not be read "
    "from any stored copy of the paper (only its abstract and first page are stored), so they read n/a."
)
ANCHOR = {  # issue 9: reference MAE, img 64, patch 8, width 192, depth 12, 19 epochs, full imagenette2_96/train
    "MAE (random masking)": (42.4, 52.5),
    "random init (no pretraining)": (34.9, 48.4),
}
TABLE_TITLES = {
    "table3": "Table 3 - masking strategies",
    "table1": "Table 1 - MAE vs SemMAE at two patch sizes (same encoder token count)",
    "table4": "Table 4 - which parts guide the masking",
}
DIFFERENCES = """\
* **Scale.** Paper: ImageNet-1k (1.28 M images), ViT-B (86 M parameters), 224 px, 800 epochs, fine-tuning and a
  90-epoch linear probe. Here: Imagenette (10 classes) resized to 96 px and trained at {img} px, a {depth}-block
  width-{width} ViT, {epochs} epochs on {train} train images; metrics are kNN and a fast linear probe on frozen
  features. Absolute numbers are not comparable; only the ordering of rows could be.
* **Part encoder.** Paper: an iBOT ViT-S/16 trained on ImageNet. Here: bootstrapped offline by a
  {boot}-epoch random-masking MAE on the same train subset ({parts} parts, {parts_epochs} part-learning epochs),
  unless `--encoder-checkpoint` was given. Such a weak encoder gives much noisier parts than iBOT's.
* **Patch sizes.** Paper Table 1: patch 16 vs patch 8 + keep the most-foreground 1/4 at 224 px (196 encoder
  tokens each). Here: patch {patch} vs patch {fine} + keep {keep} at {img} px ({tokens} encoder tokens each);
  P = {patch}, P/2 = {fine}. "MAE, patch P/2 + keep" uses random masking among the kept cells (same foreground
  keep as SemMAE), so the two rows differ only in the masking.
* **Seeds.** Mean +- sample std over seeds; with {seeds} seeds and small val sets the std is itself rough.
  Differences below about two std are not evidence either way.
"""


def _view(preset: dict[str, Any]) -> str:
    """The evaluation view of a preset, e.g. ``Resize(73) + CenterCrop(64) (crop 0.875)``."""
    crop = float(preset.get("eval_crop_pct", 0.875))
    size = int(preset["img_size"])
    return f"bicubic Resize({round(size / crop)}) + CenterCrop({size}) (crop {crop:g})"


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}"


def _paired(recs: list[dict], base: list[dict], metric: str) -> str:
    """Mean +- std over seeds of (row - baseline), matched by seed: the seed-to-seed noise partly cancels."""
    by_seed = {r["seed"]: r[metric] for r in base if metric in r}
    diffs = [r[metric] - by_seed[r["seed"]] for r in recs if r["seed"] in by_seed and metric in r]
    if not diffs or recs is base or (recs and base and recs[0]["key"] == base[0]["key"]):
        return ""
    mean = statistics.fmean(diffs)
    std = f" ± {statistics.stdev(diffs):.1f}" if len(diffs) > 1 else ""
    return f"{mean:+.1f}{std}"


def _baseline_key(table: str, label: str) -> str:
    """The row each row is compared with: MAE with the same patch setting (random masking)."""
    return "mae_fine" if table == "table1" and "P/2" in label else "random"


def _vals(recs: list[dict], metric: str) -> list[float]:
    return [r[metric] for r in recs if r.get(metric) is not None]


def _paper(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def load_records(runs_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]


def rows_by_table(records: list[dict[str, Any]]) -> dict[str, dict[str, list[dict]]]:
    """table -> row label -> the records (one per seed) that fill it, in the grid's row order."""
    out: dict[str, dict[str, list[dict]]] = {}
    for rec in records:
        for table, label in rec.get("rows", []):
            out.setdefault(table, {}).setdefault(label, []).append(rec)
    return out


def _row_order(planned_rows: list[tuple[str, str]], table: str, have: dict[str, list[dict]]) -> list[str]:
    labels = [label for t, label in planned_rows if t == table]
    return labels + [label for label in have if label not in labels]


def write_summary(
    out: Path,
    stem: str,
    runs_dir: Path,
    planned: list[tuple[str, int]],
    preset: dict[str, Any],
    stages: dict[str, float],
    data: str,
    patch: int,
    width: int,
    planned_rows: list[tuple[str, str]] | None = None,
) -> Path:
    """Rewrite ``<out>/<stem>.{md,png,json}`` from the per-run JSON files; returns the markdown path."""
    records = load_records(runs_dir)
    tables = rows_by_table(records)
    planned_rows = planned_rows or []
    init = tables.get("init", {}).get("random init (no pretraining)", [])
    by_key: dict[str, list[dict]] = {}
    for r in records:
        by_key.setdefault(r["key"], []).append(r)
    done = {(r["key"], r["seed"]) for r in records}
    missing = [f"{k} seed {s}" for k, s in planned if (k, s) not in done]
    other_view = sorted(
        f"{r['key']} seed {r['seed']}"
        for r in records
        if float(r.get("preset", {}).get("eval_crop_pct", 0.875)) != float(preset.get("eval_crop_pct", 0.875))
    )
    seeds = sorted({s for _, s in planned})
    p = preset
    lines = [
        f"# SemMAE reproduction at small scale: `{stem}`",
        "",
        f"Generated by `python benchmarks/repro.py --preset {p['name']}` (see `docs/reproduction.md`). Data: "
        f"`{data}` (train {p['train_per_class'] or 'all'} / val {p['val_per_class'] or 'all'} images per class). "
        f"Model `{p['model']}` depth {p['depth']}, decoder depth {p['decoder_depth']}, {p['img_size']} px, "
        f"{p['epochs']} epochs (warm-up {p['warmup_epochs']}), batch {p['batch_size']}, blr {p['blr']}. "
        f"Metrics on `val`: weighted kNN (cosine, k=20, T=0.07) and the fast linear probe "
        f"({p['linprobe_epochs']} epochs, best of the blr sweep) and a standardised logistic regression "
        "(scikit-learn, L-BFGS to convergence, C = 1), all on the same frozen CLS features of "
        f"{_view(p)}; "
        "top-1 in percent, mean ± std over seeds. Δ columns: the row minus MAE with the same patch setting "
        "(`random`, or `mae_fine` for the patch-P/2 rows), matched by seed (same data order and initialisation).",
        "",
        f"Runs finished: {len(records)} of {len(planned)}."
        + (f" **Missing:** {', '.join(missing)}." if missing else " The grid is complete."),
        "",
    ]
    if other_view:
        lines += [
            f"**Evaluated with another view than this preset's** (move their per-run JSON aside and rerun to "
            f"re-evaluate): {', '.join(other_view)}.",
            "",
        ]
    for table in ("table3", "table1", "table4"):
        have = tables.get(table, {})
        if not have and all(t != table for t, _ in planned_rows):
            continue
        lines += [
            f"## {TABLE_TITLES[table]}",
            "",
            "| row | config | seeds | kNN top-1 | fast linear probe | logistic regression | Δ kNN vs MAE "
            "| Δ fast probe vs MAE | Δ log. reg. vs MAE | paper linear probe | paper fine-tune |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label in _row_order(planned_rows, table, have):
            recs = have.get(label, [])
            lp, ft = PAPER.get((table, label), (None, None))
            key = recs[0]["key"] if recs else "-"
            shown = label.replace("patch P/2", f"patch {p['fine_patch']}").replace(
                "patch P", f"patch {patch}"
            )
            base = by_key.get(_baseline_key(table, label), [])
            lines.append(
                f"| {shown} | `{key}` | {len(recs)} | {_fmt([r['knn_top1'] for r in recs])} | "
                f"{_fmt([r['linprobe_top1'] for r in recs])} | {_fmt(_vals(recs, 'logreg_top1'))} | "
                f"{_paired(recs, base, 'knn_top1')} | {_paired(recs, base, 'linprobe_top1')} | "
                f"{_paired(recs, base, 'logreg_top1')} | {_paper(lp)} | {_paper(ft)} |"
            )
        lines.append(
            f"| random init (no pretraining) | `random_init` | {len(init)} | "
            f"{_fmt([r['knn_top1'] for r in init])} | {_fmt([r['linprobe_top1'] for r in init])} | "
            f"{_fmt(_vals(init, 'logreg_top1'))} | {_paired(init, by_key.get('random', []), 'knn_top1')} | "
            f"{_paired(init, by_key.get('random', []), 'linprobe_top1')} | "
            f"{_paired(init, by_key.get('random', []), 'logreg_top1')} | | |"
        )
        lines.append("")
    lines += [PAPER_SOURCE, ""]
    # the anchor: our random row and random init next to the reference MAE's numbers
    random_rows = tables.get("table3", {}).get("random", []) or tables.get("anchor", {}).get(
        "MAE (random masking)", []
    )
    lines += [
        "## Correctness anchor (issue 9)",
        "",
        "The issue's reference MAE: img 64, patch 8, width 192, **depth 12**, decoder 128 x 4, 19 epochs on the "
        "**full** 9,469-image train split, batch 128; probe = standardised logistic regression (compare the "
        "logistic-regression column); kNN identical; the anchor evaluated bicubic Resize(64), this run "
        f"{_view(p)}. A smaller preset is expected to land below it, the random-init row near it.",
        "",
        "| row | seeds | kNN top-1 | logistic regression | fast linear probe | anchor kNN | anchor log. reg. |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, recs in (("MAE (random masking)", random_rows), ("random init (no pretraining)", init)):
        a_knn, a_lp = ANCHOR[label]
        lines.append(
            f"| {label} | {len(recs)} | {_fmt([r['knn_top1'] for r in recs])} | "
            f"{_fmt(_vals(recs, 'logreg_top1'))} | {_fmt([r['linprobe_top1'] for r in recs])} | "
            f"{a_knn:.1f} | {a_lp:.1f} |"
        )
    lines.append("")
    # timings
    lines += [
        "## Timings",
        "",
        "| stage / config | runs | seconds (mean) | pretrain img/s (median) |",
        "|---|---|---|---|",
    ]
    for name, sec in stages.items():
        lines.append(f"| stage `{name}` | 1 | {sec:.0f} | |")
    for key, recs in by_key.items():
        total = [r["pretrain_seconds"] + r["eval_seconds"] for r in recs]
        ips = [r["img_per_s"] for r in recs if r.get("img_per_s")]
        lines.append(
            f"| `{key}` (pretrain + eval) | {len(recs)} | {statistics.fmean(total):.0f} | "
            f"{statistics.median(ips):.0f} |"
            if ips
            else f"| `{key}` (eval only) | {len(recs)} | {statistics.fmean(total):.0f} | |"
        )
    lines.append("")
    notes = runs_dir.parent / "NOTES.md"  # hand-written observations about this grid, if any
    if notes.is_file():
        lines += ["## Observations (hand-written, see NOTES.md)", "", notes.read_text().strip(), ""]
    tokens = (p["img_size"] // patch) ** 2
    lines += [
        "## What differs from the paper's setting",
        "",
        DIFFERENCES.format(
            img=p["img_size"],
            depth=p["depth"],
            width=width,
            epochs=p["epochs"],
            train=(p["train_per_class"] * 10 if p["train_per_class"] else "all"),
            boot=p["bootstrap_epochs"],
            parts=p["num_parts"],
            parts_epochs=p["parts_epochs"],
            patch=patch,
            fine=p["fine_patch"],
            keep=p["fg_keep"],
            tokens=tokens,
            seeds=len(seeds),
        ),
        f"![bar chart]({stem}.png)",
        "",
        f"Raw per-run records: `{stem}/per-run/*.json` (all of them also in `{stem}.json`).",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines))
    (out / f"{stem}.json").write_text(
        json.dumps({"preset": preset, "stages": stages, "missing": missing, "runs": records}, indent=1)
    )
    _bar_chart(out / f"{stem}.png", records, init, stem)
    return md


def _bar_chart(path: Path, records: list[dict], init: list[dict], title: str) -> None:
    """One bar pair (kNN, linear probe) per configuration, error bars = std over seeds, random init as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys: list[str] = []
    for r in records:
        if r["key"] != "random_init" and r["key"] not in keys:
            keys.append(r["key"])
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(keys) + 2), 4.2))
    x = np.arange(len(keys))
    bars = (
        (-0.27, "knn_top1", "kNN"),
        (0.0, "linprobe_top1", "fast linear probe"),
        (0.27, "logreg_top1", "log. reg."),
    )
    for off, metric, name in bars:
        vals = [
            [r[metric] for r in records if r["key"] == k and r.get(metric) is not None] or [0.0] for k in keys
        ]
        means = [float(np.mean(v)) for v in vals]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(x + off, means, 0.27, yerr=stds, capsize=3, label=name)
    for metric, style in (("knn_top1", ":"), ("linprobe_top1", "--"), ("logreg_top1", "-.")):
        if _vals(init, metric):
            ax.axhline(float(np.mean(_vals(init, metric))), color="grey", ls=style, lw=1)
    ax.set_xticks(x, keys, rotation=30, ha="right")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(
        f"{title} (grey: random init; dotted kNN, dashed fast probe, dash-dot log. reg.)", fontsize=9
    )
    if keys:
        lo = min(r[m] for r in records for m in ("knn_top1", "linprobe_top1"))
        ax.set_ylim(max(0.0, lo - 10), None)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
