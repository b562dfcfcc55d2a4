"""Schedules (equation-level against a direct formula), LR scaling, param groups, precision and the loss scaler."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.engine.optim import build_optimizer, param_groups
from semmae.engine.precision import Precision, resolve_precision
from semmae.engine.schedule import cosine_schedule, progress, scaled_lr, set_lr
from semmae.engine.trainer import LossScaler
from semmae.errors import UserError


def _direct(i, base, final, total, warm):
    if i < warm:
        return base * i / warm
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * (i - warm) / (total - warm)))


@pytest.mark.parametrize("total,warm", [(10, 0), (100, 7), (37, 36), (5, 5)])
def test_cosine_schedule_matches_formula(total, warm):
    base, final = 2.4e-3, 1e-6
    sched = cosine_schedule(base, final, total, warm)
    assert sched.shape == (total,)
    ref = (
        np.array([_direct(i, base, final, total, warm) for i in range(total)])
        if warm < total
        else np.array([base * i / warm for i in range(total)])
    )
    np.testing.assert_allclose(sched, ref, rtol=1e-12, atol=0)
    if 0 < warm < total:
        assert sched[0] == 0.0 and sched[warm] == pytest.approx(base)
        assert np.all(np.diff(sched[warm:]) <= 0)  # monotone decay after warm-up
        assert np.all(np.diff(sched[: warm + 1]) > 0)


def test_lr_scaling_and_progress():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_lr(1.5e-4, 256) == pytest.approx(1.5e-4)
    assert progress(0, 50) == 0.0 and progress(25, 50) == 0.5


def _vit():
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)


def test_param_groups_exclude_norms_biases_tokens():
    model = _vit()
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay and no_decay and not decay & no_decay
    assert decay | no_decay == {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"cls_token", "pos_embed", "norm.weight", "norm.bias", "blocks.0.attn.qkv.bias"} <= no_decay
    assert {"blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "blocks.1.mlp.fc2.weight"} <= decay
    for n in decay:
        assert dict(model.named_parameters())[n].ndim >= 2
    opt = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
    assert opt.defaults["betas"] == (0.9, 0.95)
    set_lr(opt, 0.5)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)


def test_frozen_params_left_out():
    model = _vit()
    model.pos_embed.requires_grad_(False)
    members = {id(p) for g in param_groups(model, 0.05) for p in g["params"]}
    assert id(model.pos_embed) not in members


def test_precision_resolution_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == Precision("fp32", "cpu")  # bf16 only when asked for on CPUs
    assert resolve_precision("bf16", cpu) == Precision("bf16", "cpu")
    assert resolve_precision("fp32", cpu).dtype is None
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(UserError, match="must be one of"):
        resolve_precision("fp8", cpu)
    with resolve_precision("bf16", cpu).autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


def test_loss_scaler_accumulates_clips_and_steps():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1)
    ref = copy.deepcopy(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    scaler = LossScaler(Precision("fp32", "cpu"))
    assert scaler.state_dict() == {} and not scaler.enabled
    x = torch.randn(8, 4)
    before = torch.cat([p.detach().flatten() for p in lin.parameters()])
    # two half-batches, update only on the second = one full-batch gradient
    assert scaler(lin(x[:4]).pow(2).mean() / 2, opt, lin.parameters, update=False) is None
    norm = scaler(lin(x[4:]).pow(2).mean() / 2, opt, lin.parameters, clip_grad=1e-3)
    ref(x).pow(2).mean().backward()
    g = torch.cat([p.grad.flatten() for p in ref.parameters()])
    assert float(norm) == pytest.approx(float(g.norm()), rel=1e-5)
    after = torch.cat([p.detach().flatten() for p in lin.parameters()])
    # clipped SGD step: moved by exactly lr * clip, along -g
    torch.testing.assert_close(after - before, -g / g.norm() * 1e-3, rtol=1e-3, atol=1e-9)


def test_every_adamw_is_fused_on_cuda_and_plain_on_the_cpu(monkeypatch):
    """Issue 38: fp16 runs read GradScaler's inf check back to the host every step with an unfused optimiser
    (finetune/segment's layer-decay AdamW and parts train's were unfused); one builder decides for all."""
    import torch

    from semmae.engine import optim

    made = []
    real = torch.optim.AdamW

    def spy(groups, **kw):
        made.append(kw.get("fused"))
        return real(groups, **{k: v for k, v in kw.items() if k != "fused"})

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optim.build_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
    assert made == [None]  # CPU parameters: the plain kernel
    cuda = torch.nn.Parameter(torch.zeros(2))
    monkeypatch.setattr(type(cuda), "is_cuda", property(lambda self: True))
    optim.adamw([{"params": [cuda]}], lr=1e-3)
    assert made[-1] is True
    import inspect

    from semmae.parts import train as parts_train

    assert "adamw(" in inspect.getsource(parts_train) and "torch.optim.AdamW(" not in inspect.getsource(
        parts_train
    )
    assert "adamw(" in inspect.getsource(optim.layer_decay_optimizer)
