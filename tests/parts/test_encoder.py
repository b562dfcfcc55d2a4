"""The frozen encoder returns F_c, F and the last layer's CLS attention (recomputed from qkv) correctly."""

from __future__ import annotations

import torch

from semmae.parts.encoder import FrozenEncoder, FrozenEncoderSpec, build_encoder

from .conftest import HEADS, IMG, PATCH, tiny_vit


def _slow_last_attention(vit, images):
    """Full attention matrix of the last block, unfused, from the definition softmax(q k^T / sqrt(d))."""
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    for blk in vit.blocks[:-1]:
        x = blk(x)
    blk = vit.blocks[-1]
    h = blk.norm1(x)
    b, t, d = h.shape
    hd = d // HEADS
    qkv = blk.attn.qkv(h)
    q, k = qkv[..., :d], qkv[..., d : 2 * d]
    out = torch.empty(b, HEADS, t, t)
    for head in range(HEADS):
        qh, kh = q[..., head * hd : (head + 1) * hd], k[..., head * hd : (head + 1) * hd]
        out[:, head] = (qh @ kh.transpose(1, 2) / hd**0.5).softmax(-1)
    return out


def test_tokens_and_cls_attention_match_definitions():
    vit = tiny_vit()
    enc = FrozenEncoder(vit)
    images = torch.randn(2, 3, IMG, IMG)
    out = enc(images)
    L = (IMG // PATCH) ** 2
    assert out["cls"].shape == (2, vit.embed_dim) and out["patches"].shape == (2, L, vit.embed_dim)
    assert out["cls_attn"].shape == (2, HEADS, L)
    with torch.no_grad():
        feats = vit.forward_features(images)
        attn = _slow_last_attention(vit, images)
    torch.testing.assert_close(out["cls"], feats[:, 0])
    torch.testing.assert_close(out["patches"], feats[:, 1:])
    torch.testing.assert_close(out["cls_attn"], attn[:, :, 0, 1:], rtol=1e-5, atol=1e-6)


def test_encoder_is_frozen_and_stays_in_eval_mode():
    enc = FrozenEncoder(tiny_vit())
    enc.train()
    assert not enc.training and not enc.vit.training
    assert all(not p.requires_grad for p in enc.parameters())
    out = enc(torch.randn(1, 3, IMG, IMG))
    assert not out["cls"].requires_grad


def test_build_encoder_from_checkpoint_and_random_init(encoder_ckpt):
    enc = build_encoder(FrozenEncoderSpec(checkpoint=str(encoder_ckpt), img_size=IMG))
    ref = tiny_vit()
    torch.testing.assert_close(
        enc.vit.state_dict()["blocks.1.attn.qkv.weight"], ref.state_dict()["blocks.1.attn.qkv.weight"]
    )
    assert enc.grid_size == IMG // PATCH and enc.num_heads == HEADS


def test_feature_layer_takes_tokens_from_an_earlier_block_and_attention_from_the_last():
    import pytest

    from semmae.errors import UserError

    vit = tiny_vit()
    images = torch.randn(2, 3, IMG, IMG)
    last, early = FrozenEncoder(vit)(images), FrozenEncoder(vit, feature_layer=-1)(images)
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        ref = vit.norm(vit.blocks[0](x))
    torch.testing.assert_close(early["patches"], ref[:, 1:])
    torch.testing.assert_close(early["cls"], ref[:, 0])
    torch.testing.assert_close(early["cls_attn"], last["cls_attn"])
    assert not torch.allclose(early["patches"], last["patches"])
    for bad in (1, -2):  # depth 2: only 0 and -1 exist
        with pytest.raises(UserError, match="--feature-layer"):
            FrozenEncoder(vit, feature_layer=bad)


def test_random_init_encoder_is_the_plain_vit_its_name_says():
    """Without a checkpoint the part encoder is rebuilt from the record of ``spec.arch`` (one road from a record to
    a model): timm's weights for that name at the same seed; a stored random encoder loads back exactly; names of
    ViTs that are not plain (registers, DeiT-3) are refused instead of being built as something else."""
    import pytest
    import timm

    from semmae.errors import UserError

    spec = FrozenEncoderSpec(arch="vit_tiny_patch16_224", img_size=32)
    torch.manual_seed(0)
    ours = build_encoder(spec)
    torch.manual_seed(0)
    theirs = timm.create_model(spec.arch, pretrained=False, num_classes=0, img_size=32)
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.vit.state_dict().items())
    again = build_encoder(spec, ours.vit.state_dict())
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(again(images)["cls_attn"], ours(images)["cls_attn"])
    with pytest.raises(UserError, match="not a plain ViT name"):
        build_encoder(FrozenEncoderSpec(arch="vit_small_patch14_reg4_dinov2", img_size=28))
