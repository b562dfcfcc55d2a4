"""Weighted kNN against a direct, one-query-at-a-time implementation of its formula."""

from __future__ import annotations

import math

import pytest
import torch

from semmae.engine.knn_vote import knn_accuracy, knn_predict
from semmae.errors import UserError


def slow_votes(bank, labels, q, k, t, c):
    """votes[c] = sum over the k most cosine-similar bank rows with label c of exp(sim / T)."""
    out = []
    for x in q:
        sims = [float(torch.dot(x, b) / (x.norm() * b.norm())) for b in bank]
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        v = [0.0] * c
        for j in order:
            v[int(labels[j])] += math.exp(sims[j] / t)
        out.append(v)
    return torch.tensor(out)


def test_votes_match_the_formula():
    g = torch.Generator().manual_seed(0)
    bank, q = torch.randn(30, 6, generator=g), torch.randn(7, 6, generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    votes = knn_predict(bank, labels, q, k=5, temperature=0.5, num_classes=4, chunk_size=3)
    torch.testing.assert_close(votes, slow_votes(bank, labels, q, 5, 0.5, 4), rtol=1e-5, atol=1e-5)


def test_accuracy_on_clusters_and_k_larger_than_the_bank():
    centers = torch.eye(3) * 10
    g = torch.Generator().manual_seed(1)
    bank = centers.repeat_interleave(5, 0) + torch.randn(15, 3, generator=g)
    labels = torch.arange(3).repeat_interleave(5)
    q = centers + 0.1 * torch.randn(3, 3, generator=g)
    res = knn_accuracy(bank, labels, q, torch.tensor([0, 1, 2]), k=3)
    assert res == {"top1": 100.0, "top5": 100.0}
    # a query labelled wrongly counts as wrong; k > N is clipped, top-5 covers all 3 classes
    res = knn_accuracy(bank, labels, q, torch.tensor([1, 1, 2]), k=100)
    assert res["top1"] == pytest.approx(200 / 3) and res["top5"] == 100.0


def test_scale_invariance_cosine():
    g = torch.Generator().manual_seed(2)
    bank, q = torch.randn(20, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.randint(0, 3, (20,), generator=g)
    a = knn_predict(bank, labels, q, k=4, num_classes=3)
    b = knn_predict(bank * 7.0, labels, q * 0.01, k=4, num_classes=3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=0)


def test_bad_inputs():
    with pytest.raises(UserError, match="feature dims differ"):
        knn_predict(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(2, 5))
    with pytest.raises(UserError, match="at least one"):
        knn_predict(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.randn(2, 3))
