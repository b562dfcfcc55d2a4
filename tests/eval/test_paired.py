"""semmae.eval.paired: the paired statistics behind every SemMAE-vs-MAE claim, against direct formulas (scipy's
t tests), and the decision rule on cases whose answer is known."""

from __future__ import annotations

import math

import pytest

from semmae.eval.paired import decide, paired_stats


def test_paired_stats_equal_the_direct_formulas():
    from scipy import stats

    d = [0.5, -0.2, 1.1, 0.3, 0.9, -0.4, 0.6, 0.2]
    st = paired_stats(d, alpha=0.05, margin=1.0)
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert st["mean"] == pytest.approx(mean) and st["sd"] == pytest.approx(sd)
    assert st["ci95"] == pytest.approx([mean - half, mean + half])
    assert st["p_two_sided"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    # TOST: the larger of the two one-sided p values against -1 and +1
    p_lo = stats.ttest_1samp(d, -1.0, alternative="greater").pvalue
    p_hi = stats.ttest_1samp(d, 1.0, alternative="less").pvalue
    assert st["p_equivalence"] == pytest.approx(max(p_lo, p_hi))


@pytest.mark.parametrize(
    "diffs, verdict",
    [
        ([1.0, 1.2, 0.9, 1.1, 1.3, 0.8], "helps"),
        ([-2.0, -2.2, -1.9, -2.1], "hurts"),
        ([0.1, -0.1, 0.05, -0.05, 0.0, 0.1, -0.1, 0.02], "null"),
        ([3.0, -3.0, 2.0, -2.5], "inconclusive"),
    ],
)
def test_decision_rule(diffs, verdict):
    st = paired_stats(diffs, margin=1.0)
    assert decide(st, 1.0)[0] == verdict


def test_one_pair_has_no_interval_and_no_decision():
    st = paired_stats([0.7])
    assert st["mean"] == 0.7 and "ci95" not in st
    assert decide(st, 1.0)[0] == "insufficient"


def test_two_identical_pairs_are_too_few_for_a_verdict():
    st = paired_stats([2.5, 2.5])  # a zero-width interval
    assert st["ci95"] == [2.5, 2.5]
    assert decide(st, 1.0)[0] == "insufficient"
    assert decide(paired_stats([2.5, 2.6, 2.4]), 1.0)[0] == "helps"
