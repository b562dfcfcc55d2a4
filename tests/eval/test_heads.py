"""Linear-probe heads, their optimiser and schedule, and the fast (cached-feature) probe."""

from __future__ import annotations

import math

import pytest
import torch

from semmae.engine.schedule import cosine_schedule, set_lr
from semmae.eval.heads import ProbeHeads, build_head_optimizer, head_metrics
from semmae.eval.linprobe import _sweep_results, edge_note, fast_linear_probe, sweep_edge


def test_probe_schedule_values():
    """The probe's factors: warm-up reaching 1 on the last warm-up step (offset 1), then a half cosine."""
    f = cosine_schedule(1.0, 0.0, 100, 10, warmup_offset=1)
    assert f[0] == pytest.approx(0.1)
    assert f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5)
    assert f[32] == pytest.approx(0.5 * (1 + math.cos(math.pi * 22 / 90)))
    g = cosine_schedule(1.0, 0.01, 101, 10, warmup_offset=1)
    assert g[100] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 90 / 91)))


def test_heads_share_a_parameter_free_batchnorm_and_are_independent():
    heads = ProbeHeads(8, 3, num_heads=4)
    assert list(heads.bn.parameters()) == []
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    logits = heads(x)
    assert logits.shape == (4, 16, 3)
    heads.loss(logits, y).backward()
    for h in heads.heads:  # each head's gradient is its own cross-entropy gradient
        w = h.weight.detach().clone().requires_grad_(True)
        xn = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-6)
        torch.nn.functional.cross_entropy(xn @ w.T + h.bias.detach(), y).backward()
        torch.testing.assert_close(h.weight.grad, w.grad)


def test_optimizer_groups_carry_their_learning_rates():
    heads = ProbeHeads(4, 2, num_heads=3)
    opt = build_head_optimizer(heads, [0.1, 0.2, 0.4], "lars")
    assert len(opt.param_groups) == 6
    assert [g["always_adapt"] for g in opt.param_groups] == [True, False] * 3
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05, 0.1, 0.1, 0.2, 0.2]
    with pytest.raises(Exception, match="lars"):
        build_head_optimizer(heads, [0.1, 0.2, 0.4], "adam")


def test_head_metrics_counts_exactly():
    heads = ProbeHeads(2, 3, num_heads=1).eval()
    with torch.no_grad():
        heads.heads[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, -1]]))
        heads.heads[0].bias.zero_()
    x = torch.tensor([[5.0, 0], [0, 5], [-5, -5], [5, 0]])
    c1, c5 = head_metrics(heads, x, torch.tensor([0, 1, 2, 1]))
    assert c1.tolist() == [3] and c5.tolist() == [4]


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
def test_fast_probe_learns_separable_features(optimizer):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 16, generator=g) * 3
    ytr, yva = torch.arange(4).repeat(40), torch.arange(4).repeat(10)
    xtr = means[ytr] + torch.randn(160, 16, generator=g)
    xva = means[yva] + torch.randn(40, 16, generator=g)
    # LARS steps are lr x 0.001 x |w| (trust ratio), so small batches need large base rates
    blrs = [1e-3, 200.0] if optimizer == "lars" else [1e-6, 0.5]
    res = fast_linear_probe(
        xtr, ytr, xva, yva, epochs=15, blrs=blrs, batch_size=32, optimizer=optimizer, warmup_epochs=2
    )
    assert res["top1"] >= 95.0 and res["top5"] == 100.0
    assert [r["blr"] for r in res["per_blr"]] == blrs and res["best_blr"] == blrs[1]
    assert res["best_on_edge"] == "top"  # the best is the largest rate swept
    assert res["per_blr"][0]["top1"] < res["per_blr"][1]["top1"]  # the sweep tells the rates apart


def test_best_on_edge_of_the_sweep():
    """Top / bottom by value (a sweep may be given in any order); inside, a single rate and ties are no edge."""
    assert sweep_edge([0.1, 0.4, 1.6], 1.6) == "top" and sweep_edge([1.6, 0.4, 0.1], 1.6) == "top"
    assert sweep_edge([0.1, 0.4, 1.6], 0.1) == "bottom" and sweep_edge([0.1, 0.4, 1.6], 0.4) is None
    assert sweep_edge([0.4], 0.4) is None and sweep_edge([0.4, 0.4], 0.4) is None
    blrs = [0.1, 0.4, 1.6]
    inside = _sweep_results(torch.tensor([5, 9, 7]), torch.tensor([10, 10, 10]), 10, blrs)
    assert inside["best_blr"] == 0.4 and inside["best_on_edge"] is None and edge_note("x", inside) is None
    top = _sweep_results(torch.tensor([5, 7, 9]), torch.tensor([10, 10, 10]), 10, blrs)
    assert top["best_on_edge"] == "top"
    assert edge_note("semmae linprobe", top) == (
        "semmae linprobe: note: the best blr 1.6 is the top of the sweep [0.1 .. 1.6]; the optimum may lie above it: "
        "widen --blrs"
    )
    # a tie between an edge and the inside goes to the first best (here the inside): no false alarm
    tie = _sweep_results(torch.tensor([5, 9, 9]), torch.tensor([10, 10, 10]), 10, blrs)
    assert tie["best_blr"] == 0.4 and tie["best_on_edge"] is None
