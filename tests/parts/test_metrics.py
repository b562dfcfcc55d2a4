"""Part metrics against scikit-learn and brute force; baselines' exact label layouts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from semmae.parts.baselines import majority_per_cell, spatial_split
from semmae.parts.metrics import (
    KeypointScorer,
    PartScorer,
    ari_from_table,
    best_union_iou,
    contingency,
    hungarian_miou,
    nmi_from_table,
)


@pytest.mark.parametrize("seed", range(6))
def test_nmi_ari_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, k, m = rng.integers(2, 60), rng.integers(1, 5), rng.integers(1, 6)
    t, p = rng.integers(0, k, n), rng.integers(0, m, n)
    c = contingency(t, p, k, m)
    assert math.isclose(nmi_from_table(c), normalized_mutual_info_score(t, p), abs_tol=1e-9)
    assert math.isclose(ari_from_table(c), adjusted_rand_score(t, p), abs_tol=1e-9)


@pytest.mark.parametrize(
    "t,p",
    [([0, 0, 0], [1, 1, 1]), ([0, 1, 2], [2, 1, 0]), ([0, 0, 1], [0, 0, 0]), ([0, 1, 1, 2], [3, 3, 4, 4])],
)
def test_nmi_ari_degenerate_cases_match_sklearn(t, p):
    c = contingency(np.array(t), np.array(p), 3, 5)
    assert math.isclose(nmi_from_table(c), normalized_mutual_info_score(t, p), abs_tol=1e-9)
    assert math.isclose(ari_from_table(c), adjusted_rand_score(t, p), abs_tol=1e-9)


def test_hungarian_miou_hand_example():
    # true: 0 = bg, parts 1, 2. Pred 0 covers part 1 exactly, pred 1 covers part 2 plus 2 bg pixels.
    true = np.array([0, 0, 0, 1, 1, 2, 2])
    pred = np.array([2, 1, 1, 0, 0, 1, 1])
    c = contingency(true, pred, 3, 3)
    assert math.isclose(hungarian_miou(c), (1.0 + 2 / 4) / 2)
    assert math.isclose(hungarian_miou(contingency(true, true, 3, 3)), 1.0)


def test_best_union_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 3, 200), rng.integers(0, 5, 200)
    c = contingency(true, pred, 3, 5)
    fg = true > 0
    best = 0.0
    for r in range(1, 6):
        for subset in itertools.combinations(range(5), r):
            sel = np.isin(pred, subset)
            best = max(best, (sel & fg).sum() / (sel | fg).sum())
    assert math.isclose(best_union_iou(c), best)
    assert math.isnan(best_union_iou(contingency(np.zeros(4, int), np.arange(4), 2, 4)))


def test_part_scorer_pooled_and_per_image():
    s = PartScorer(3, 3)
    a = np.array([[0, 1], [2, 2]])
    s.add(a, a)  # perfect
    s.add(a, np.array([[0, 2], [1, 1]]))  # perfect partition, swapped ids
    r = s.result()
    assert r["images"] == 2 and math.isclose(r["nmi_image"], 1.0) and math.isclose(r["fg_iou_image"], 1.0)
    assert r["nmi"] < 1.0  # ids do not agree across images
    s.add(np.zeros((2, 2), int), np.zeros((2, 2), int))  # no foreground: left out of per-image means
    assert s.result()["images"] == 2


def test_keypoint_scorer_pooled():
    s = KeypointScorer(3, 4)
    s.add(np.array([0, 1, 2]), np.array([3, 1, 0]))
    s.add(np.array([0, 1]), np.array([3, 1]))
    r = s.result()
    assert r["keypoints"] == 5 and math.isclose(r["kp_nmi"], 1.0) and math.isclose(r["kp_ari"], 1.0)


@pytest.mark.parametrize("n,grid", [(6, 14), (4, 8), (5, 7), (2, 3)])
def test_spatial_split_uses_exactly_n_ids(n, grid):
    ids = spatial_split(grid, n)
    assert ids.shape == (grid, grid)
    assert sorted(ids.unique().tolist()) == list(range(n))


def test_majority_per_cell():
    labels = np.zeros((4, 4), int)
    labels[:2, :2] = 1
    labels[0, 2] = 2  # a minority in the top-right cell
    out = majority_per_cell(labels, 2, 3)
    assert out.tolist() == [[1, 0], [0, 0]]
