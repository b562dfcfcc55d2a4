"""Confusion-matrix metrics against hand-computed cases and a direct per-class formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semmae.eval.segmentation.metrics import ConfusionMatrix, format_table, summarize


def test_hand_computed_three_classes():
    # gt:   0 0 0 1 1 2 | 255 (ignored)
    # pred: 0 0 1 1 2 2 | 0
    gt = torch.tensor([0, 0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = cm.compute(["a", "b", "c"])
    # IoU: a 2/(3+2-2)=2/3, b 1/(2+2-1)=1/3, c 1/(1+2-1)=1/2; Acc: 2/3, 1/2, 1/1
    ious = [c["iou"] for c in m["per_class"]]
    accs = [c["acc"] for c in m["per_class"]]
    assert ious == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert accs == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert m["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert m["macc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["aacc"] == pytest.approx(4 / 6)
    assert m["pixels"] == 6
    assert [c["pixels"] for c in m["per_class"]] == [3, 2, 1]


def test_absent_classes_are_left_out_of_the_means():
    # class 2 never appears; class 3 is predicted but absent from the labels
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 3, 1, 1])
    m = summarize(
        ConfusionMatrix(4).matrix.index_put_((gt, pred), torch.ones(4, dtype=torch.int64), accumulate=True)
    )
    pc = m["per_class"]
    assert pc[2]["iou"] is None and pc[2]["acc"] is None
    assert pc[3]["iou"] == 0.0 and pc[3]["acc"] is None
    assert m["miou"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["macc"] == pytest.approx((1 / 2 + 1) / 2)
    assert "n/a" in format_table(m)


def test_batches_accumulate_to_the_direct_formula():
    rng = np.random.default_rng(0)
    k = 5
    gt = rng.integers(0, k, size=(3, 7, 9))
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = rng.integers(0, k, size=gt.shape)
    cm = ConfusionMatrix(k)
    for b in range(3):  # one image at a time
        cm.update(torch.from_numpy(pred[b]), torch.from_numpy(gt[b]))
    m = cm.compute()
    valid = gt != 255
    for c in range(k):
        inter = np.sum((gt == c) & (pred == c) & valid)
        union = np.sum(((gt == c) | (pred == c)) & valid)
        assert m["per_class"][c]["iou"] == pytest.approx(inter / union)
        assert m["per_class"][c]["acc"] == pytest.approx(inter / np.sum((gt == c) & valid))
    assert m["aacc"] == pytest.approx(np.sum((gt == pred) & valid) / valid.sum())
    assert m["miou"] == pytest.approx(np.mean([c["iou"] for c in m["per_class"]]))


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside|lie in"):
        cm.update(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2), torch.zeros(3))
    empty = cm.compute()
    assert empty["aacc"] is None and empty["miou"] is None and not math.isnan(empty["pixels"])
