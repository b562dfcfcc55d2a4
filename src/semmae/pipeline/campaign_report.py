"""The report of a campaign (:mod:`semmae.pipeline.campaign`), rewritten after every run: ``<out>/campaign-<name>.md``
(per-seed table, paired differences with mean, SD, 95 % CI, the equivalence test and the decision per contrast, and
beside each, descriptive only, the Wilcoxon signed-rank p and the leave-one-seed-out range of the 95 % CI's bounds),
``.json`` and ``.png`` (per-seed paired differences with the CIs). Before every planned pair is in, a contrast's
line states numbers only (no verdict words)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semmae.eval.paired import decide, interim, paired_stats, robustness
from semmae.pipeline.marks import StageMarks
from semmae.pipeline.plan import UNTRAINED, Plan, metric
from semmae.utils.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from semmae.pipeline.campaign import Campaign


#: what was found about a campaign's pairing after its runs (issue 40; its records are never rewritten)
_FOLDER_RESAMPLING = (
    "the runs read an image folder, where the MAE arm (no part cache) resampled its crop with PIL and the "
    "part-guided arms with torch, so the two arms of a pair saw the same images, crops and flips but pixels that "
    "differ by up to 2 levels in 0.44 % of values (measured on this set's images). Fixed after the campaign "
    "(`tests/engine/test_pairing.py`); the records stand as measured, a small extra noise in every pair."
)
PAIRING_NOTES = {"mechanism-synth": _FOLDER_RESAMPLING, "mechanism-synth-24": _FOLDER_RESAMPLING}


def comparison_stats(plan: Plan, recs: dict, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Per contrast key (:attr:`Plan.contrast_map`) and metric: :func:`paired_stats` of arm - baseline by seed."""
    out: dict[str, dict[str, Any]] = {}
    for key, con in plan.contrast_map.items():
        out[key] = {}
        for m in metrics:
            diffs, seeds = [], []
            for s in plan.seed_list:
                a, b = recs.get((con.arm, s)), recs.get((con.baseline, s))
                if a and b and metric(a, m) is not None and metric(b, m) is not None:
                    diffs.append(metric(a, m) - metric(b, m))
                    seeds.append(s)
            out[key][m] = {**paired_stats(diffs, plan.alpha, plan.margin), "seeds": seeds}
    return out


def decisions_of(plan: Plan, stats: dict[str, dict[str, Any]], complete: bool) -> dict[str, dict[str, Any]]:
    """Per contrast: the rule's verdict and sentence once every pair is in; before, ``"interim"`` and numbers only
    (:func:`semmae.eval.paired.interim`). Beside either, the descriptive robustness checks (never a verdict)."""
    out = {}
    for key, con in plan.contrast_map.items():
        st = stats[key][plan.primary]
        if complete:
            verdict, sentence = decide(st, plan.margin, plan.paper_effect)
        else:
            verdict, sentence = "interim", interim(st, plan.seeds)
        out[key] = {
            "arm": con.arm,
            "baseline": con.baseline,
            "verdict": verdict,
            "sentence": sentence,
            "robustness": {
                "p_wilcoxon": st.get("p_wilcoxon"),
                "loo_ci95": st.get("loo_ci95"),
                "sentence": robustness(st),
            },
        }
    return out


def write_report(c: Campaign, recs: dict[tuple[str, int], dict[str, Any]]) -> None:
    plan = c.plan
    metrics = [plan.primary, *plan.secondary]
    stats = comparison_stats(plan, recs, metrics)
    complete = all((a.key, s) in recs for a in plan.arms for s in plan.seed_list)
    decisions = decisions_of(plan, stats, complete)
    gate_path = c.runs_dir.parent / "gate.json"
    gate = json.loads(gate_path.read_text()) if gate_path.exists() else None
    quality = {
        k: v["result"] for k, v in StageMarks(c.keep).records().items() if k.startswith("part_quality")
    }
    try:
        state = json.loads(c.state_path.read_text())
    except (OSError, ValueError):
        state = {}
    summary = {
        "plan": {k: v for k, v in asdict(plan).items() if k != "path"},
        "plan_file": os.path.relpath(plan.path, c.repo),
        "plan_sha256": c.plan_sha,
        # the plan used is the one the campaign state recorded at its first run (only then "committed before the
        # first result" holds); plan_note: the plan file now differs from it
        "plan_recorded": isinstance(state, dict)
        and state.get("name") == plan.name
        and state.get("plan_sha256") == c.plan_sha,
        "plan_note": c.plan_note,
        "commit": c.pin["commit"],
        "excluded": list(c.excluded),  # "edited: per-run/<file>": not counted
        "unhashed_records": c.unhashed,  # counted records without a content hash (from before hashes)
        "complete": complete,
        "status": c.status(),
        "gate": gate,
        "part_quality": quality,
        "stats": stats,
        "decisions": decisions,
        "runs": {f"{k}-seed{s}": r for (k, s), r in sorted(recs.items())},
    }
    c.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(c.out / f"{c.stem}.json", summary)
    atomic_write_text(c.out / f"{c.stem}.md", render_markdown(c, summary, metrics))
    if any(stats[a][plan.primary]["n"] for a in plan.comparisons):
        plot_differences(plan, stats, c.out / f"{c.stem}.png")


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def render_markdown(c: Campaign, s: dict[str, Any], metrics: list[str]) -> str:
    plan = c.plan
    arms = [a.key for a in plan.arms]
    if s["plan_recorded"]:
        pinned = "committed before the first result"
    else:
        pinned = "not the plan recorded in the campaign state: nothing shows it was fixed before the results"
    lines = [
        f"# Campaign `{plan.name}`: {plan.question}",
        "",
        f"Plan: `{s['plan_file']}` (sha256 {s['plan_sha256'][:12]}), {pinned}; every run"
        f" from commit `{s['commit'][:12]}`. Generated by `python benchmarks/campaign.py {s['plan_file']} --work DIR`"
        f" (`benchmarks/campaigns/run.sh {plan.name}` chooses the DIR).",
        "",
    ]
    if s["plan_note"]:
        lines += [f"**Plan file changed:** {s['plan_note']}.", ""]
    if plan.name in PAIRING_NOTES:
        lines += [f"**Known issue, found after these runs:** {PAIRING_NOTES[plan.name]}", ""]
    lines += [
        f"**Status:** {s['status']}."
        + ("" if s["complete"] else " Interim: no decision before every pair is in."),
        "",
    ]
    if s["excluded"]:
        lines += [
            "**Not counted** (changed after the runner wrote them: the content hash does not match, or is missing "
            "where this campaign hashes every record): " + "; ".join(f"`{e}`" for e in s["excluded"]) + ".",
            "",
        ]
    if s["unhashed_records"]:
        lines += [
            f"{s['unhashed_records']} of {len(s['runs'])} records carry no content hash (written before records "
            "were hashed): counted, unverified.",
            "",
        ]
    lines += [
        "## Design",
        "",
        f"- Arms ({len(arms)}): "
        + "; ".join(
            f"`{a.key}` = {a.label or a.masking} (masking {a.masking}"
            + (f", gamma {a.gamma:g}" if a.masking.startswith("adaptive") else "")
            + (f", alpha capped at {a.alpha_max:g}" if a.alpha_max != 1.0 else "")
            + (f", parts {a.parts}" if a.parts else "")
            + (f", patch {c.p.fine_patch} + keep {c.p.fg_keep:g}" if a.fine else f", patch {c.patch}")
            + ")"
            for a in plan.arms
        ),
        (
            f"- Baseline `{plan.baseline}`"
            if not plan.contrasts
            else "- Contrasts, each decided by the rule below: "
            + "; ".join(f"`{con.arm}` - `{con.baseline}`" for con in plan.contrasts)
            + f" (gate arm `{plan.baseline}`)"
        )
        + f"; {plan.seeds} paired seeds ({plan.first_seed}..{plan.seed_list[-1]}), all arms"
        " of a seed before the next, the first arm rotating per seed.",
        f"- Budget: model `{c.p.model}` depth {c.p.depth}, decoder depth {c.p.decoder_depth}, {c.p.img_size} px, "
        f"{c.p.epochs} epochs (warm-up {c.p.warmup_epochs}), batch {c.p.batch_size}, blr {c.p.blr:g}; data "
        f"{_data_text(plan.data)}.",
        f"- Primary metric `{plan.primary}`; secondary {', '.join(f'`{m}`' for m in plan.secondary) or 'none'}.",
        f"- Decision (primary, all pairs): 95 % CI > 0 -> helps; 90 % CI inside +-{plan.margin:g} -> well-powered "
        f"null; 95 % CI < 0 -> hurts; else inconclusive. Gate at seed {plan.first_seed}: `{plan.baseline}` beats "
        f"the untrained encoder by >= {plan.gate_min_gain:g} on {' or '.join(plan.gate_metrics)}, probes converged.",
        "- Beside each decision, descriptive only (the rule decides): the Wilcoxon signed-rank p (two-sided, "
        "zero differences split between the sides) and the range of the 95 % CI's bounds with one seed left out.",
    ]
    if plan.notes:
        lines += ["", plan.notes.strip()]
    if s["gate"]:
        lines += ["", f"**Gate:** {'passed' if s['gate']['passed'] else 'FAILED'} - {s['gate']['sentence']}."]
    if s["part_quality"]:
        scored = any("nmi_image" in m for res in s["part_quality"].values() for m in res.values())
        where = "vs ground-truth masks" if scored else "no ground truth: how many parts each image uses"
        lines += ["", f"## Part quality (validation images, {where})", ""]
        cols = ("fg_iou", "nmi_image", "miou_image", "parts_used", "largest_share")
        lines += ["| cache | method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for stage, res in s["part_quality"].items():
            for method, m in res.items():
                lines.append(
                    f"| {stage.removeprefix('part_quality_')} | {method} | "
                    + " | ".join(_fmt(m.get(k), ".3f") for k in cols)
                    + " |"
                )
    lines += ["", "## Decisions", ""]
    for key, con in plan.contrast_map.items():
        d = s["decisions"][key]
        line = f"- `{con.arm}` - `{con.baseline}` on `{plan.primary}`: "
        # interim: the numbers only (the sentence says so); a decision: the verdict, then why
        line += f"{d['sentence']}." if d["verdict"] == "interim" else f"**{d['verdict']}** - {d['sentence']}."
        if d["robustness"]["sentence"]:
            line += f" Robustness (descriptive): {d['robustness']['sentence']}."
        lines.append(line)
    lines += ["", "## Paired differences (arm - baseline, same seed)", ""]
    lines += [
        "| comparison | metric | n | mean | SD | 95 % CI | 90 % CI | p (two-sided) | p (equivalence +-"
        f"{plan.margin:g}) | arm ahead | Wilcoxon p | 95 % CI bounds, one seed left out |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, con in plan.contrast_map.items():
        for m in metrics:
            st = s["stats"][key][m]
            ci95 = f"[{st['ci95'][0]:+.2f}, {st['ci95'][1]:+.2f}]" if "ci95" in st else "-"
            ci90 = f"[{st['ci90'][0]:+.2f}, {st['ci90'][1]:+.2f}]" if "ci90" in st else "-"
            loo = st.get("loo_ci95")
            loo_text = (
                f"lower {loo['lower'][0]:+.2f}..{loo['lower'][1]:+.2f}, "
                f"upper {loo['upper'][0]:+.2f}..{loo['upper'][1]:+.2f}"
                if loo
                else "-"
            )
            lines.append(
                f"| `{con.arm}` - `{con.baseline}` | `{m}` | {st['n']} | {_fmt(st.get('mean'), '+.2f')} | "
                f"{_fmt(st.get('sd'))} | {ci95} | {ci90} | {_fmt(st.get('p_two_sided'), '.3f')} | "
                f"{_fmt(st.get('p_equivalence'), '.3f')} | "
                + (f"{st['wins']}/{st['n']}" if "wins" in st else "-")
                + f" | {_fmt(st.get('p_wilcoxon'), '.3f')} | {loo_text} |"
            )
    lines += ["", f"## Per seed (`{plan.primary}`, then secondary metrics)", ""]
    cols = [*arms, UNTRAINED]
    for m in metrics:
        lines += [f"`{m}`", "", "| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for seed in plan.seed_list:
            row = [
                _fmt(metric(s["runs"][f"{k}-seed{seed}"], m)) if f"{k}-seed{seed}" in s["runs"] else ""
                for k in cols
            ]
            lines.append(f"| {seed} | " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "## Time",
        "",
        "Wall clocks are descriptive (no comparison is timed in a campaign). Load: the machine's 1-minute load "
        "average at each run's start and end, median over the runs, against its core count; above the core count "
        "the run shared the machine with other work.",
        "",
        "| arm | runs | pretrain s (median) | eval s (median) | img/s (median) | load start / end (median) |",
        "|---|---|---|---|---|---|",
    ]
    for k in cols:
        rs = [r for key, r in s["runs"].items() if key.rsplit("-seed", 1)[0] == k]
        if rs:
            med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
            lines.append(
                f"| `{k}` | {len(rs)} | {_fmt(med([r['pretrain_seconds'] for r in rs]), '.0f')} | "
                f"{_fmt(med([r['eval_seconds'] for r in rs]), '.0f')} | "
                f"{_fmt(med([r['img_per_s'] for r in rs if r.get('img_per_s')]), '.0f')} | {_load_text(rs)} |"
            )
    if any(s["stats"][a][plan.primary]["n"] for a in plan.comparisons):
        lines += ["", f"![paired differences]({c.stem}.png)"]
    return "\n".join(lines) + "\n"


def _load_text(runs: list[dict[str, Any]]) -> str:
    """``1.9 / 2.1 of 2 cores`` from the records' ``machine_load``; ``not recorded`` for records older than it."""
    loads = [r["machine_load"] for r in runs if isinstance(r.get("machine_load"), dict)]
    start = sorted(x["start"] for x in loads if isinstance(x.get("start"), (int, float)))
    end = sorted(x["end"] for x in loads if isinstance(x.get("end"), (int, float)))
    if not start or not end:
        return "not recorded"
    cpus = max((x.get("cpus") or 0) for x in loads)
    return f"{start[len(start) // 2]:.1f} / {end[len(end) // 2]:.1f} of {cpus} cores"


def _data_text(data: dict[str, Any]) -> str:
    if data.get("kind") == "synth":
        return (
            f"`semmae data synth --style {data.get('style', 'random')}`, {data['num_images']} images at "
            f"{data['size']} px (val fraction {data.get('val_fraction', 0.2):g}, seed {data.get('seed', 0)})"
        )
    masks = f", ground-truth part masks `{data['masks']}`" if data.get("masks") else ""
    return f"`{data.get('path')}`{masks}"


def plot_differences(plan: Plan, stats: dict, path: Path) -> None:
    """Per-seed paired differences (dots) with the mean and its 95 % (thin, capped) / 90 % (thick) CIs, per
    comparison, on the primary metric; the +-margin band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contrasts = plan.contrast_map
    arms = list(contrasts)
    fig, ax = plt.subplots(figsize=(max(4.6, 1.8 + 1.9 * len(arms)), 4.2), dpi=120)
    ax.axhspan(-plan.margin, plan.margin, color="0.92", zorder=0, label=f"+-{plan.margin:g} (equivalence)")
    ax.axhline(0, color="0.4", lw=0.8)
    labelled = False
    for i, arm in enumerate(arms):
        st = stats[arm][plan.primary]
        if not st["n"]:
            continue
        xs = [i + 0.18 * ((j % 5) - 2) / 2 for j in range(st["n"])]
        ax.scatter(xs, st["diffs"], s=18, color="tab:blue", alpha=0.7, zorder=3)
        if "ci95" in st:
            first, labelled = not labelled, True
            ax.errorbar(  # 95 %: thin, with caps (the decision's "helps" / "hurts" interval)
                i + 0.32,
                st["mean"],
                yerr=[[st["mean"] - st["ci95"][0]], [st["ci95"][1] - st["mean"]]],
                fmt="o",
                color="tab:red",
                capsize=6,
                lw=1.2,
                zorder=5,
                label="mean, 95 % CI" if first else None,
            )
            ax.plot(  # 90 %: thick (the equivalence test's interval), behind the thin one
                [i + 0.32] * 2,
                st["ci90"],
                color="tab:red",
                alpha=0.45,
                lw=6,
                solid_capstyle="butt",
                zorder=4,
                label="90 % CI" if first else None,
            )
    ax.set_xticks(range(len(arms)), [f"{c.arm}\n- {c.baseline}" for c in contrasts.values()])
    ax.set_xlim(-0.5, len(arms) - 0.5)  # one comparison too: its dots and its interval centred in the panel
    ax.set_ylabel(f"{plan.primary}: arm - baseline (points)")
    ax.set_title(  # two short lines (the legend names the intervals): a one-comparison figure is narrow
        f"{plan.name}: paired differences\n(one dot per seed)",
        fontsize=9,
    )
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
