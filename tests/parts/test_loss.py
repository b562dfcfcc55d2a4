"""Eq. 5-7 against direct formulas."""

from __future__ import annotations

import math

import torch

from semmae.parts.loss import diversity_loss, part_loss, reconstruction_loss


def test_reconstruction_eq5_sums_channels_and_averages_pixels():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    total = 0.0
    for n in range(2):
        for i in range(4):
            for j in range(5):
                total += sum(float(a[n, c, i, j] - b[n, c, i, j]) ** 2 for c in range(3))
    expect = total / (2 * 4 * 5)  # 1/(HW) sum_{i,j}, averaged over the batch
    assert math.isclose(float(reconstruction_loss(a, b)), expect, rel_tol=1e-5)
    assert math.isclose(float(reconstruction_loss(a, b)), 3 * float(((a - b) ** 2).mean()), rel_tol=1e-5)


def test_diversity_eq6_matches_pairwise_cosine_formula():
    torch.manual_seed(1)
    maps = torch.rand(3, 4, 10)
    total = 0.0
    for b in range(3):
        for i in range(4):
            for j in range(4):
                mi, mj = maps[b, i], maps[b, j]
                cos = float(mi @ mj / (mi.norm() * mj.norm()))
                total += (cos - (1.0 if i == j else 0.0)) ** 2
    assert math.isclose(float(diversity_loss(maps)), total / (3 * 16), rel_tol=1e-5)


def test_diversity_is_zero_for_disjoint_maps_and_maximal_when_identical():
    disjoint = torch.eye(4).reshape(1, 4, 4)  # each part on its own position: cos = I
    assert float(diversity_loss(disjoint)) < 1e-12
    same = torch.ones(1, 4, 9)
    assert math.isclose(float(diversity_loss(same)), 12 / 16, rel_tol=1e-6)


def test_total_loss_eq7_weights_diversity_by_lambda():
    torch.manual_seed(2)
    recon, target, maps = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), torch.rand(1, 3, 4)
    out = part_loss(recon, target, maps, lam=0.03)
    torch.testing.assert_close(out["loss"], out["rec"] + 0.03 * out["div"])
    torch.testing.assert_close(out["rec"], reconstruction_loss(recon, target))
    torch.testing.assert_close(out["div"], diversity_loss(maps))


def test_concentration_is_the_spatial_variance_of_each_normalised_map():
    from semmae.parts.loss import concentration_loss

    torch.manual_seed(3)
    maps = torch.rand(2, 3, 9)  # 3 x 3 grid, coordinates -1, 0, 1
    coords = [(-1.0 + r, -1.0 + c) for r in range(3) for c in range(3)]
    total = 0.0
    for b in range(2):
        for k in range(3):
            w = maps[b, k] / maps[b, k].sum()
            cy = sum(float(w[u]) * coords[u][0] for u in range(9))
            cx = sum(float(w[u]) * coords[u][1] for u in range(9))
            total += sum(
                float(w[u]) * ((coords[u][0] - cy) ** 2 + (coords[u][1] - cx) ** 2) for u in range(9)
            )
    assert math.isclose(float(concentration_loss(maps)), total / 6, rel_tol=1e-5)
    point = torch.zeros(1, 2, 9)
    point[0, 0, 4], point[0, 1, 0] = 1.0, 1.0  # all mass on one cell: no spread
    assert float(concentration_loss(point)) < 1e-9
    spread = torch.ones(1, 1, 9)  # uniform over the grid: variance 2 * (2/3)
    assert math.isclose(float(concentration_loss(spread)), 4 / 3, rel_tol=1e-5)
    out = part_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), maps, lam=0.03, concentration=0.5)
    torch.testing.assert_close(out["loss"], out["rec"] + 0.03 * out["div"] + 0.5 * out["con"])
    assert "con" not in part_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), maps, lam=0.03)
