"""ViT pyramid, UPerNet/FCN heads, loss, layer-decay groups and the poly schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.engine.optim import layer_decay_optimizer
from semmae.engine.schedule import poly_schedule, set_lr
from semmae.errors import UserError
from semmae.eval.segmentation.backbone import ViTPyramid, default_out_indices
from semmae.eval.segmentation.segmentor import Segmentor, segmentation_loss


def _vit(img=32, patch=8, dim=32, depth=2):
    return VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=2, num_classes=0
    )


def test_default_out_indices_follow_the_paper():
    assert default_out_indices(12) == [3, 5, 7, 11]  # blocks 4, 6, 8, 12 of ViT-B
    assert default_out_indices(24) == [7, 11, 15, 23]
    assert default_out_indices(2) == [0, 0, 0, 1]


@pytest.mark.parametrize("img,patch", [(64, 16), (32, 8), (64, 4)])
def test_pyramid_strides(img, patch):
    pyr = ViTPyramid(_vit(img, patch, depth=4))
    feats = pyr(torch.randn(2, 3, img, img))
    assert [tuple(f.shape) for f in feats] == [(2, 32, img // s, img // s) for s in (4, 8, 16, 32)]


def test_pyramid_taps_the_requested_blocks():
    vit = _vit(depth=3).eval()
    x = torch.randn(1, 3, 32, 32)
    ref = vit.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
    pyr = ViTPyramid(vit, out_indices=[0, 1, 1, 2]).eval()
    feats = pyr(x)
    # stride-8 level of a patch-8 encoder is the identity resampling of its tapped block
    assert torch.allclose(feats[1], ref[1], atol=1e-6)
    assert len(pyr.vit.blocks) == 3 and isinstance(pyr.vit.norm, torch.nn.Identity)


def test_pyramid_refuses_bad_geometry():
    with pytest.raises(UserError, match="power-of-two"):
        ViTPyramid(VisionTransformer(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2))
    with pytest.raises(UserError, match="multiple"):
        ViTPyramid(_vit(img=48))
    with pytest.raises(UserError, match="out_indices"):
        ViTPyramid(_vit(), out_indices=[0, 1, 2, 5])


def _segmentor(num_classes=5, aux=True):
    return Segmentor(ViTPyramid(_vit()), num_classes, 16, [1, 2], aux_channels=8, aux=aux)


def test_segmentor_shapes_loss_and_gradients():
    torch.manual_seed(0)
    model = _segmentor().train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out["logits"].shape == (2, 5, 8, 8) and out["aux"].shape == (2, 5, 2, 2)
    labels = torch.randint(0, 5, (2, 32, 32))
    labels[0, :4] = 255
    losses = segmentation_loss(out, labels, 255, 0.4)
    assert torch.allclose(losses["loss"], losses["loss_decode"] + 0.4 * losses["loss_aux"])
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    assert set(model(x)) == {"logits"}


def test_frozen_encoder_stays_fixed_while_necks_and_heads_learn():
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0, drop_path_rate=0.5
    )
    model = Segmentor(ViTPyramid(vit, frozen=True), 5, 16, [1, 2], aux_channels=8).train()
    assert not model.backbone.vit.training and model.decode_head.training  # no drop path in the encoder
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = layer_decay_optimizer(model, lr=1e-2, weight_decay=0.05, layer_decay=0.75, betas=(0.9, 0.999))
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(
        1 for n in before if not n.startswith("backbone.vit.")
    )
    x, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    segmentation_loss(model(x), labels, 255, 0.4)["loss"].backward()
    opt.step()
    for name, p in model.named_parameters():
        if name.startswith("backbone.vit."):
            assert p.grad is None and torch.equal(p, before[name]), name
    assert not torch.equal(model.backbone.necks[0][0].weight, before["backbone.necks.0.0.weight"])
    assert not torch.equal(model.decode_head.classifier.weight, before["decode_head.classifier.weight"])
    # with the encoder in eval mode, two training-mode passes give the same encoder features
    with torch.no_grad():
        a = model.backbone.vit.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        b = model.backbone.vit.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    assert torch.equal(a, b)


def test_loss_ignores_the_ignore_index():
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.full((1, 8, 8), 255)
    labels[0, 0, 0] = 1
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    expected = -torch.log_softmax(up[0, :, 0, 0], 0)[1]
    assert torch.allclose(segmentation_loss({"logits": logits}, labels, 255, 0.4)["loss"], expected)


def test_layer_decay_groups():
    model = _segmentor()
    opt = layer_decay_optimizer(model, lr=1.0, weight_decay=0.05, layer_decay=0.5, betas=(0.9, 0.999))
    scale = {}
    decay = {}
    for g in opt.param_groups:
        for p in g["params"]:
            scale[id(p)], decay[id(p)] = g["lr_scale"], g["weight_decay"]
    named = dict(model.named_parameters())
    depth = 2  # layers: stem 0, blocks 1..2, heads 3
    assert scale[id(named["backbone.vit.pos_embed"])] == pytest.approx(0.5 ** (depth + 1))
    assert decay[id(named["backbone.vit.pos_embed"])] == 0.0
    assert scale[id(named["backbone.vit.blocks.0.attn.qkv.weight"])] == pytest.approx(0.5**2)
    assert scale[id(named["backbone.vit.blocks.1.attn.qkv.weight"])] == pytest.approx(0.5)
    assert decay[id(named["backbone.vit.blocks.1.attn.qkv.weight"])] == 0.05
    assert scale[id(named["decode_head.classifier.weight"])] == 1.0
    assert decay[id(named["decode_head.classifier.bias"])] == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)
    set_lr(opt, 2.0)
    assert {g["lr"] for g in opt.param_groups} == {2.0 * g["lr_scale"] for g in opt.param_groups}


def test_poly_schedule_with_warmup():
    lr = poly_schedule(1e-4, 100, 10, power=1.0, final=0.0)
    assert lr.shape == (100,)
    assert lr[0] == pytest.approx(1e-4 * 1e-6)
    t = 5
    assert lr[t] == pytest.approx(1e-4 * (1 - t / 100) * (1 - (1 - t / 10) * (1 - 1e-6)))
    assert lr[50] == pytest.approx(1e-4 * 0.5)
    assert lr[99] == pytest.approx(1e-6)
    assert np.all(np.diff(lr[10:]) < 0)
