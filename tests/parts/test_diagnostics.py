"""Collapse diagnostics (semmae.parts.diagnostics) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from semmae.parts.diagnostics import (
    collapse_verdict,
    effective_count,
    is_collapsed,
    part_usage,
    usage_from_ids,
)


def test_effective_count_is_exp_entropy():
    assert effective_count(torch.tensor([1.0, 0.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    assert effective_count(torch.tensor([0.25] * 4)).item() == pytest.approx(4.0)
    p = torch.tensor([0.5, 0.3, 0.2])
    slow = math.exp(-sum(x * math.log(x) for x in p.tolist()))
    assert effective_count(p).item() == pytest.approx(slow)


def test_usage_of_one_collapsed_and_one_split_image():
    # image 0: every cell is part 2; image 1: half part 0, half part 1 (4 parts, 4 cells)
    ids = torch.tensor([[2, 2, 2, 2], [0, 0, 1, 1]])
    u = usage_from_ids(ids, 4)
    assert u["parts_used"] == pytest.approx((1 + 2) / 2)
    assert u["largest_share"] == pytest.approx((1.0 + 0.5) / 2)
    assert [u[f"share_{i}"] for i in range(4)] == pytest.approx([0.25, 0.25, 0.5, 0.0])
    assert u["parts_used_pooled"] == pytest.approx(
        math.exp(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    )


def test_part_usage_reads_argmax_and_confidence_of_maps():
    maps = torch.zeros(1, 2, 3)
    maps[0, 0] = torch.tensor([0.9, 0.6, 0.2])  # softmax over parts: each column sums to 1
    maps[0, 1] = 1 - maps[0, 0]
    u = part_usage(maps)
    assert u["share_0"] == pytest.approx(2 / 3) and u["share_1"] == pytest.approx(1 / 3)
    assert u["max_prob"] == pytest.approx((0.9 + 0.6 + 0.8) / 3)
    # maps normalised over positions (rows) are renormalised per cell before max_prob
    rows = torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]])
    assert part_usage(rows)["max_prob"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_collapse_verdict_names_the_cure():
    collapsed = usage_from_ids(torch.zeros(3, 16, dtype=torch.long), 6) | {"max_prob": 0.2}
    assert is_collapsed(collapsed, 6)
    line = collapse_verdict(collapsed, 6)
    assert "COLLAPSED" in line and "--epochs" in line and "\n" not in line
    split = usage_from_ids(torch.arange(6).repeat(3, 3), 6) | {"max_prob": 0.9}
    assert not is_collapsed(split, 6) and "not collapsed" in collapse_verdict(split, 6)
