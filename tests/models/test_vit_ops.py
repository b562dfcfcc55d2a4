"""The ViT operations (models/vit_ops.py) give, to the bit, what timm's own forward and the hand-unrolled forwards
they replaced gave (those used timm's private ``_pos_embed``; it is the oracle here): forward values and gradients,
with every patch, a dynamic size, no class embedding, register tokens, kept patches and masked patches."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.models.vit_ops import (
    cls_attention,
    embed_tokens,
    forward_tokens,
    last_cls_attention,
    pool_tokens,
    pooled_features,
    tokens_and_cls_attention,
)

TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=0)  # 8 x 8 patches
VARIANTS = {
    "plain": {},
    "dynamic": {"dynamic_img_size": True},
    "no_embed_class": {"no_embed_class": True},
    "registers": {"reg_tokens": 2},
    "no_class_token": {"class_token": False, "global_pool": "avg"},
    "dynamic_registers_no_embed_class": {"dynamic_img_size": True, "reg_tokens": 1, "no_embed_class": True},
}


def _vit(seed: int = 0, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(**TINY, **kw)


def _grads(vit: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in vit.named_parameters() if p.grad is not None}


def _old_tokens(vit, images, mask=None, token=None):
    """The bootstrap backbone's forward before vit_ops (timm's private _pos_embed)."""
    x = vit.patch_embed(images)
    if mask is not None:
        x = torch.where(mask.view(*x.shape[:-1], 1), token.view(*[1] * (x.ndim - 1), -1).to(x.dtype), x)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
    return vit.norm(vit.blocks(x))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forward_tokens_is_timm_forward_features_to_the_bit_with_its_gradients(name):
    kw = VARIANTS[name]
    for side in (32, 16, 48) if kw.get("dynamic_img_size") else (32,):
        vit = _vit(**kw).train()
        x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(side))
        want = vit.forward_features(x)
        (want * want.detach().cos()).sum().backward()
        want_grads = _grads(vit)
        vit.zero_grad(set_to_none=True)
        got = forward_tokens(vit, x)
        (got * got.detach().cos()).sum().backward()
        got_grads = _grads(vit)
        assert torch.equal(got, want), (name, side)
        assert got_grads.keys() == want_grads.keys()
        assert all(torch.equal(got_grads[k], want_grads[k]) for k in want_grads), (name, side)


def test_masked_patches_see_the_mask_token_as_before_with_its_gradient():
    vit = _vit(dynamic_img_size=True).train()
    token = torch.nn.Parameter(torch.randn(1, 1, 32))
    x = torch.randn(2, 3, 32, 32)
    mask = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) < 0.4
    want = _old_tokens(vit, x, mask, token)
    want.square().sum().backward()
    want_grad = token.grad.clone()
    token.grad = None
    got = forward_tokens(vit, x, mask=mask, mask_token=token)
    got.square().sum().backward()
    assert torch.equal(got, want) and torch.equal(token.grad, want_grad)
    assert not torch.equal(got, forward_tokens(vit, x))  # the mask changes the tokens


@pytest.mark.parametrize("name", ["plain", "no_embed_class", "registers"])
def test_kept_patches_enter_at_their_own_positions(name):
    vit = _vit(**VARIANTS[name]).eval()
    x = torch.randn(2, 3, 32, 32)
    everything = torch.arange(64).expand(2, -1)
    with torch.no_grad():
        assert torch.equal(forward_tokens(vit, x, keep_index=everything), vit.forward_features(x))
        keep = torch.stack(
            [torch.randperm(64, generator=torch.Generator().manual_seed(i))[:16] for i in (0, 1)]
        )
        tokens = embed_tokens(vit, x, keep_index=keep)
        full = embed_tokens(vit, x)
    n_prefix = vit.num_prefix_tokens
    assert tokens.shape == (2, n_prefix + 16, 32)
    # the kept tokens are the full embedding's rows of those patches (patch + its position), prefix unchanged
    assert torch.equal(tokens[:, :n_prefix], full[:, :n_prefix])
    assert torch.equal(tokens[:, n_prefix:], full[:, n_prefix:].gather(1, keep[..., None].expand(-1, -1, 32)))
    with pytest.raises(ValueError, match="keep_index must lie"):
        embed_tokens(vit, x, keep_index=torch.full((2, 4), 64))
    with pytest.raises(ValueError, match=r"keep_index must be \[B, K\]"):
        embed_tokens(vit, x, keep_index=torch.zeros(3, 4, dtype=torch.long))


def _old_frozen_encoder(vit, images, feature_layer=0):
    """parts.encoder.FrozenEncoder.forward before vit_ops."""
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    feats = None
    for i, blk in enumerate(vit.blocks[:-1]):
        x = blk(x)
        if i == len(vit.blocks) - 1 + feature_layer:
            feats = vit.norm(x)
    attn = cls_attention(vit.blocks[-1], x)[..., vit.num_prefix_tokens :]
    x = vit.norm(vit.blocks[-1](x))
    return (x if feats is None else feats), attn


@pytest.mark.parametrize("feature_layer", [0, -1, -2])
def test_tokens_and_cls_attention_equal_the_old_part_encoder_forward(feature_layer):
    vit = _vit().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want_tokens, want_attn = _old_frozen_encoder(vit, x, feature_layer)
        tokens, attn = tokens_and_cls_attention(vit, x, feature_layer)
        assert torch.equal(tokens, want_tokens) and torch.equal(attn, want_attn)
        assert torch.equal(last_cls_attention(vit, x), want_attn)  # the kept-token foreground's source
    assert attn.shape == (3, 2, 64)
    torch.testing.assert_close(attn.sum(-1), 1 - cls_attention(vit.blocks[-1], _before_last(vit, x))[..., 0])


def _before_last(vit, x):
    with torch.no_grad():
        return vit.blocks[:-1](embed_tokens(vit, x))


def test_cls_attention_is_the_softmax_definition():
    vit = _vit().eval()
    with torch.no_grad():
        h = _before_last(vit, torch.randn(2, 3, 32, 32))
        blk = vit.blocks[-1]
        q, k, _ = blk.attn.qkv(blk.norm1(h)).chunk(3, dim=-1)
        q, k = (t.unflatten(-1, (2, 16)).transpose(1, 2) for t in (q, k))  # [B, H, T, d]
        want = (q @ k.transpose(-2, -1) / 16**0.5).softmax(-1)[:, :, 0]
        torch.testing.assert_close(cls_attention(blk, h), want, rtol=1e-5, atol=1e-6)


def test_class_attention_needs_a_class_token():
    with pytest.raises(UserError, match="class token"):
        last_cls_attention(_vit(**VARIANTS["no_class_token"]), torch.randn(1, 3, 32, 32))


def test_pooled_features():
    vit = _vit().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = vit.forward_features(x)
        assert torch.equal(pooled_features(vit, x, "token"), vit(x))
        assert torch.equal(pooled_features(vit, x, "avg"), tokens[:, 1:].mean(1))
    with pytest.raises(UserError, match="pool must be"):
        pool_tokens(vit, tokens, "max")
