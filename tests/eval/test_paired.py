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


# -- descriptive robustness beside each decision (issue 40) ------------------------------------------------------
D = [0.5, -0.2, 1.1, 0.3, 0.9, -0.4, 0.6, 0.2]


def test_wilcoxon_p_is_scipys_two_sided_zsplit():
    from scipy import stats

    st = paired_stats(D)
    ref = stats.wilcoxon(D, zero_method="zsplit", alternative="two-sided")
    assert st["p_wilcoxon"] == pytest.approx(ref.pvalue)
    # the smaller rank sum by hand: |d| sorted 0.2 0.2 0.3 0.4 0.5 0.6 0.9 1.1 -> ranks 1.5 1.5 3 4 5 6 7 8; the
    # negatives (-0.2, -0.4) hold 1.5 + 4 = 5.5
    assert ref.statistic == pytest.approx(5.5)


def test_wilcoxon_without_ties_equals_the_exact_count():
    """Eight differences, no ties, no zeros: p = 2 x P(W <= w) under the exact null (2^8 equally likely signs)."""
    import itertools

    d = [1.0, 2.0, -3.0, 4.0, 5.0, 6.0, -7.0, 8.0]  # ranks = |d|; negatives hold 3 + 7 = 10
    w = 10
    sums = [sum(r for r, s in zip(range(1, 9), signs) if s) for signs in itertools.product((0, 1), repeat=8)]
    p = 2 * sum(x <= w for x in sums) / 2**8
    assert paired_stats(d)["p_wilcoxon"] == pytest.approx(p)


def test_wilcoxon_zero_differences_are_split_not_dropped():
    from scipy import stats

    d = [0.5, -0.2, 1.1, 0.3, 0.9, -0.4, 0.6, 0.0]
    st = paired_stats(d)
    assert st["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    assert st["p_wilcoxon"] != pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    assert paired_stats([0.0, 0.0, 0.0])["p_wilcoxon"] == 1.0
    assert "p_wilcoxon" not in paired_stats([0.4])


def test_leave_one_out_ci_range_equals_the_n_intervals_by_hand():
    from scipy import stats

    d = [1.0, 2.0, 4.0, -1.0]
    st = paired_stats(d)
    lows, highs = [], []
    for i in range(len(d)):
        rest = d[:i] + d[i + 1 :]
        m, s = sum(rest) / 3, math.sqrt(sum((x - sum(rest) / 3) ** 2 for x in rest) / 2)
        half = stats.t.ppf(0.975, 2) * s / math.sqrt(3)
        lows.append(m - half)
        highs.append(m + half)
    assert st["loo_ci95"]["lower"] == pytest.approx([min(lows), max(lows)])
    assert st["loo_ci95"]["upper"] == pytest.approx([min(highs), max(highs)])
    # by hand for the set without -1 (mean 7/3, SD sqrt(7/3), t 4.3027): the largest lower bound
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)
    assert st["loo_ci95"]["lower"][1] == pytest.approx(7 / 3 - half)
    assert "loo_ci95" not in paired_stats([1.0, 2.0])  # a leave-one-out set of one has no interval


def test_robustness_never_changes_the_decision():
    st = paired_stats([1.0, 1.2, 0.9, 1.1, 1.3, 0.8])
    assert decide(st, 1.0)[0] == "helps"
    plain = {k: v for k, v in st.items() if k not in ("p_wilcoxon", "loo_ci95")}
    assert decide(plain, 1.0) == decide(st, 1.0)


def test_interim_line_states_numbers_only():
    from semmae.eval.paired import interim

    st = paired_stats([0.1, -0.1, 0.05, -0.05, 0.0, 0.1, -0.1, 0.02, 0.0, 0.03, -0.02, 0.01, 0.0])
    assert decide(st, 1.0)[0] == "null"  # what the rule would say, were every pair in
    line = interim(st, 24)
    lo, hi = st["ci95"]
    assert line == (
        f"interim: 13 of 24 pairs, mean {st['mean']:+.2f}, 95 % CI [{lo:+.2f}, {hi:+.2f}]; no decision until 24"
    )
    for word in ("well-powered", "null", "helps", "hurts", "inconclusive", "reproduces"):
        assert word not in line
    assert interim(paired_stats([0.7]), 12) == "interim: 1 of 12 pairs, mean +0.70; no decision until 12"
    assert interim(paired_stats([]), 12) == "interim: 0 of 12 pairs; no decision until 12"
