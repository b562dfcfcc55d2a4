"""Eq. 1-4 of paper Sec. 3.1 against direct, slow formulas; shapes; gradients reach every trainable parameter."""

from __future__ import annotations

import math

import pytest
import torch

from semmae.parts.model import (
    AdaIN,
    MapBlur,
    PartAttention,
    PartHeadSpec,
    PartModel,
    PartTokens,
    gaussian_kernel1d,
)


def test_part_tokens_eq1_matches_per_part_formula():
    torch.manual_seed(0)
    mod = PartTokens(embed_dim=8, num_parts=3, hidden_dim=5)
    with torch.no_grad():
        for p in (mod.b1, mod.b2):
            p.normal_()
    f_c = torch.randn(4, 8)
    out = mod(f_c)
    assert out.shape == (4, 3, 8)
    for b in range(4):
        for i in range(3):
            h = torch.tanh(mod.w1[i] @ f_c[b] + mod.b1[i])
            expect = f_c[b] * torch.sigmoid(mod.w2[i] @ h + mod.b2[i])
            torch.testing.assert_close(out[b, i], expect, rtol=1e-5, atol=1e-6)
    # different parts are different tokens from the start
    assert not torch.allclose(out[:, 0], out[:, 1])


@pytest.mark.parametrize("axis", ["positions", "parts"])
@pytest.mark.parametrize("scale", [True, False])
def test_part_attention_eq2_matches_direct_formula(axis, scale):
    torch.manual_seed(1)
    att = PartAttention(embed_dim=6, proj_dim=4, softmax_over=axis, scale_logits=scale)
    f_p, f = torch.randn(2, 3, 6), torch.randn(2, 5, 6)
    m = att(f_p, f)
    assert m.shape == (2, 3, 5)
    s = 4**-0.5 if scale else 1.0
    wp, w = att.w_p.weight, att.w.weight  # [4, 6]
    logits = torch.empty(2, 3, 5)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                logits[b, i, j] = (wp @ f_p[b, i]) @ (w @ f[b, j]) * s
    expect = logits.softmax(-1 if axis == "positions" else 1)
    torch.testing.assert_close(m, expect, rtol=1e-5, atol=1e-6)
    sums = m.sum(-1 if axis == "positions" else 1)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_part_attention_rejects_unknown_axis():
    with pytest.raises(ValueError, match="softmax_over"):
        PartAttention(4, 4, softmax_over="heads")


def test_blur_matches_direct_2d_convolution_with_replicate_border():
    torch.manual_seed(2)
    k, sigma = 5, 1.3
    blur = MapBlur(k, sigma)
    x = torch.rand(1, 2, 6, 7)
    y = blur(x)
    g = gaussian_kernel1d(k, sigma)
    assert math.isclose(float(g.sum()), 1.0, rel_tol=1e-6)
    pad = k // 2
    expect = torch.zeros_like(x)
    for n in range(2):
        for r in range(6):
            for c in range(7):
                acc = 0.0
                for dr in range(-pad, pad + 1):
                    for dc in range(-pad, pad + 1):
                        rr, cc = min(max(r + dr, 0), 5), min(max(c + dc, 0), 6)
                        acc += float(g[dr + pad] * g[dc + pad]) * float(x[0, n, rr, cc])
                expect[0, n, r, c] = acc
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(MapBlur(1)(x), x)
    # a constant map stays constant (mass is preserved at the border)
    torch.testing.assert_close(blur(torch.full((1, 1, 4, 4), 0.25)), torch.full((1, 1, 4, 4), 0.25))


@pytest.mark.parametrize("k", [0, 4, -3])
def test_blur_rejects_even_or_nonpositive_kernels(k):
    with pytest.raises(ValueError):
        MapBlur(k)


def test_adain_eq3_4_matches_direct_formula():
    torch.manual_seed(3)
    ada = AdaIN(channels=3, style_dim=5)
    with torch.no_grad():
        ada.style.weight.normal_()
        ada.style.bias.normal_()
    x, f_c = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    y = ada(x, f_c)
    for b in range(2):
        style = ada.style.weight @ f_c[b] + ada.style.bias
        for ch in range(3):
            xs = x[b, ch]
            mu, var = xs.mean(), ((xs - xs.mean()) ** 2).mean()
            expect = (1 + style[ch]) * (xs - mu) / torch.sqrt(var + ada.eps) + style[3 + ch]
            torch.testing.assert_close(y[b, ch], expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid,img", [(4, 32), (2, 32), (3, 42), (14, 224)])
def test_part_model_shapes_and_gradients(grid, img):
    torch.manual_seed(4)
    spec = PartHeadSpec(
        embed_dim=16,
        grid_size=grid,
        img_size=img,
        num_parts=3,
        proj_dim=8,
        decoder_dim=16,
        decoder_min_dim=4,
        blur_kernel=7,
    )
    model = PartModel(spec)
    f_c, f = torch.randn(2, 16), torch.randn(2, grid * grid, 16)
    out = model(f_c, f)
    assert out["maps"].shape == (2, 3, grid * grid)
    assert out["recon"].shape == (2, 3, img, img)
    assert torch.isfinite(out["recon"]).all()
    (out["recon"].square().mean() + out["maps"].square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    torch.testing.assert_close(model.part_maps(f_c, f), out["maps"])


def test_part_optimizer_state_from_before_the_training_kit_loads():
    """Part checkpoints written before issue 16 hold AdamW groups as [decayed, not decayed]; they still resume."""
    import torch

    from semmae.engine.optim import param_groups
    from semmae.parts.train import load_optimizer_state

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    old = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    )
    net(torch.randn(5, 3)).sum().backward()
    old.step()
    new = torch.optim.AdamW(param_groups(net, 0.01))
    load_optimizer_state(new, old.state_dict())
    for p in net.parameters():  # every parameter got its own moments back
        torch.testing.assert_close(new.state[p]["exp_avg"], old.state[p]["exp_avg"])
    assert {g["weight_decay"] for g in new.param_groups} == {0.0, 0.01}
    assert all((g["weight_decay"] > 0) == all(p.ndim > 1 for p in g["params"]) for g in new.param_groups)
