"""Paired comparisons of two pretrainings over seeds: the statistics every SemMAE-vs-MAE claim of this package
rests on (the demo's table, the evidence campaigns of benchmarks/campaign.py).

Two arms trained with the same seed share data order and initialisation, so their difference per seed
``d_s = metric(arm, s) - metric(baseline, s)`` removes most of the seed-to-seed variation (a within-pair
correlation of 0.9-1.0 was measured on the Imagenette grids). The mean of ``d`` gets a Student-t interval, and
"no difference larger than ``margin``" is tested by two one-sided t tests (TOST: equivalent at level ``alpha``
exactly when the ``1 - 2 alpha`` interval lies inside ``+-margin``).

Beside them, descriptive only (the rule above decides; issue 40): the Wilcoxon signed-rank p (two-sided,
``zero_method="zsplit"``: a zero difference counts half for each side instead of being dropped, so every pair stays
in, as in the t interval; scipy's default ``method="auto"``) and the range of the ``1 - alpha`` interval's bounds
over the ``n`` leave-one-seed-out sets (how much one seed moves the interval).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MIN_PAIRS",
    "VERDICTS",
    "WILCOXON_ZERO_METHOD",
    "decide",
    "interim",
    "leave_one_out",
    "paired_stats",
    "robustness",
    "wilcoxon_p",
]

#: what :func:`decide` can answer
VERDICTS = ("helps", "hurts", "null", "inconclusive", "insufficient")
#: scipy.stats.wilcoxon's zero_method: zero differences split their ranks between the two sides (none dropped)
WILCOXON_ZERO_METHOD = "zsplit"


def _t_interval(diffs: list[float], alpha: float) -> list[float]:
    """The ``1 - alpha`` Student-t interval of the mean of ``diffs`` (at least two)."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) / math.sqrt(n)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
    return [mean - half, mean + half]


def wilcoxon_p(diffs: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p of ``diffs`` against 0 (:data:`WILCOXON_ZERO_METHOD`); 1 when every
    difference is 0, ``None`` below two pairs."""
    from scipy import stats

    if len(diffs) < 2:
        return None
    if all(d == 0 for d in diffs):
        return 1.0
    p = float(stats.wilcoxon(diffs, zero_method=WILCOXON_ZERO_METHOD, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def leave_one_out(diffs: list[float], alpha: float = 0.05) -> dict[str, list[float]] | None:
    """The ``1 - alpha`` t interval with each seed left out in turn: ``{"lower": [min, max], "upper": [min, max]}``
    of its bounds over the ``n`` sets; ``None`` below three pairs (a set needs two)."""
    n = len(diffs)
    if n < 3:
        return None
    cis = [_t_interval(diffs[:i] + diffs[i + 1 :], alpha) for i in range(n)]
    lows, highs = [c[0] for c in cis], [c[1] for c in cis]
    return {"lower": [min(lows), max(lows)], "upper": [min(highs), max(highs)]}


def paired_stats(diffs: list[float], alpha: float = 0.05, margin: float = 1.0) -> dict[str, Any]:
    """Mean, SD, standard error, the ``1 - alpha`` and ``1 - 2 alpha`` t intervals (``ci95`` / ``ci90`` at the
    default alpha), the two-sided p value against 0 and the TOST p value against ``+-margin``.

    Args:
        diffs: per-seed paired differences (metric points).

    Returns:
        ``{"n", "diffs", "mean"}``, and from two pairs on ``"sd", "se", "wins", "ci95", "ci90", "p_two_sided",
        "p_equivalence", "p_wilcoxon"``, from three on ``"loo_ci95"`` (:func:`leave_one_out`): descriptive only.
    """
    from scipy import stats

    n = len(diffs)
    out: dict[str, Any] = {"n": n, "diffs": list(diffs)}
    if n == 0:
        return out
    mean = sum(diffs) / n
    out["mean"] = mean
    if n < 2:
        return out
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    out |= {"sd": sd, "se": se, "wins": sum(d > 0 for d in diffs)}
    t_wide = float(stats.t.ppf(1 - alpha / 2, n - 1))
    t_narrow = float(stats.t.ppf(1 - alpha, n - 1))
    out["ci95"] = [mean - t_wide * se, mean + t_wide * se]
    out["ci90"] = [mean - t_narrow * se, mean + t_narrow * se]
    if se > 0:
        out["p_two_sided"] = float(2 * stats.t.sf(abs(mean) / se, n - 1))
        p_low = stats.t.sf((mean + margin) / se, n - 1)  # H0: diff <= -margin
        p_high = stats.t.cdf((mean - margin) / se, n - 1)  # H0: diff >= +margin
        out["p_equivalence"] = float(max(p_low, p_high))
    else:
        out["p_two_sided"] = 0.0 if mean != 0 else 1.0
        out["p_equivalence"] = 0.0 if abs(mean) < margin else 1.0
    out["p_wilcoxon"] = wilcoxon_p(list(diffs))
    loo = leave_one_out(list(diffs), alpha)
    if loo is not None:
        out["loo_ci95"] = loo
    return out


def interim(st: dict[str, Any], planned: int) -> str:
    """The line of a comparison before every planned pair is in: numbers only, no verdict words."""
    head = f"interim: {st['n']} of {planned} pairs"
    if "mean" in st:
        head += f", mean {st['mean']:+.2f}"
    if "ci95" in st:
        lo, hi = st["ci95"]
        head += f", 95 % CI [{lo:+.2f}, {hi:+.2f}]"
    return f"{head}; no decision until {planned}"


def robustness(st: dict[str, Any]) -> str:
    """One line on :func:`paired_stats`' descriptive checks (Wilcoxon p, leave-one-seed-out CI bounds); "" when
    there are none."""
    parts = []
    if st.get("p_wilcoxon") is not None:
        parts.append(f"Wilcoxon signed-rank p = {st['p_wilcoxon']:.3f} (two-sided, {WILCOXON_ZERO_METHOD})")
    if st.get("loo_ci95"):
        (l0, l1), (u0, u1) = st["loo_ci95"]["lower"], st["loo_ci95"]["upper"]
        parts.append(
            f"one seed left out, the 95 % CI's lower bound spans [{l0:+.2f}, {l1:+.2f}] and its upper bound "
            f"[{u0:+.2f}, {u1:+.2f}]"
        )
    return "; ".join(parts)


#: fewer pairs than this get no verdict: two seeds that happen to differ by the same amount give a zero-width
#: interval, which says nothing about the next seed
MIN_PAIRS = 3


def decide(
    st: dict[str, Any], margin: float, paper_effect: float | None = None, min_pairs: int = MIN_PAIRS
) -> tuple[str, str]:
    """(verdict, sentence) of the decision rule on :func:`paired_stats`: the wide CI above 0 -> ``helps``; below
    0 -> ``hurts``; the narrow CI inside ``+-margin`` -> ``null`` (a well-powered null); else ``inconclusive``;
    ``insufficient`` below ``min_pairs`` pairs."""
    if "ci95" not in st or st["n"] < min_pairs:
        return "insufficient", f"{st['n']} pair(s): too few for a verdict (at least {min_pairs})"
    lo, hi = st["ci95"]
    lo90, hi90 = st["ci90"]
    ci = f"mean {st['mean']:+.2f}, 95 % CI [{lo:+.2f}, {hi:+.2f}], n = {st['n']}"
    if lo > 0:
        size = f"; the paper's gain is {paper_effect:+.1f}" if paper_effect is not None else ""
        return "helps", f"the direction reproduces ({ci}{size})"
    if hi < 0:
        return "hurts", f"the arm hurts here ({ci})"
    if -margin < lo90 and hi90 < margin:
        return "null", (
            f"a well-powered null: no difference larger than {margin:g} point ({ci}; 90 % CI "
            f"[{lo90:+.2f}, {hi90:+.2f}] inside +-{margin:g})"
        )
    return "inconclusive", f"the CI includes 0 and reaches beyond +-{margin:g} ({ci})"
