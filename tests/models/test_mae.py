"""The MAE: every registered config runs forward/backward, the patch-8 keep path, timm interop, losses."""

from __future__ import annotations

import re

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.masking import foreground_keep_index, random_mask
from semmae.models import (
    MaskedAutoencoder,
    create_model,
    list_models,
    model_config,
    patchify,
    reconstruct_images,
    unpatchify,
)
from semmae.models.patches import normalize_patches
from semmae.models.pos_embed import sincos_2d_pos_embed

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def tiny(name: str) -> MaskedAutoencoder:
    cfg = model_config(name)
    img = 4 * cfg.patch_size if cfg.patch_size > 8 else 32
    return create_model(name, img_size=img, **(TINY if "micro" not in name else {}))


def test_registry_names():
    names = list_models()
    for size in ("tiny", "small", "base", "large"):
        for p in (16, 8):
            assert f"mae_vit_{size}_patch{p}" in names
    assert "mae_vit_base_patch16_dec512d8b" in names and "mae_vit_micro_patch8" in names
    base = model_config("mae_vit_base_patch16")
    assert (base.embed_dim, base.depth, base.num_heads, base.decoder_embed_dim, base.decoder_depth) == (
        768,
        12,
        12,
        512,
        8,
    )
    assert model_config("mae_vit_base_patch8").patch_size == 8
    micro = create_model("mae_vit_micro_patch8")
    assert micro.grid_size == (4, 4) and micro.num_patches == 16 and micro.patch_size == 8


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_registered_config(name):
    torch.manual_seed(0)
    model = tiny(name)
    b = 2
    imgs = torch.randn(b, 3, model.config.img_size, model.config.img_size)
    mask = random_mask(b, model.num_patches, 0.75, torch.Generator().manual_seed(0))
    out = model(imgs, mask)
    assert set(out) == {"loss", "pred", "mask"}
    assert out["pred"].shape == (b, model.num_patches, model.patch_size**2 * 3)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname


def test_fixed_positions_are_not_trained():
    model = create_model("mae_vit_micro_patch8")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "pos_embed" not in trainable and "decoder_pos_embed" in model.state_dict()
    assert {"cls_token", "mask_token"} <= model.no_weight_decay()


def test_pos_embed_matches_mae_formula():
    """Column half then row half, each [sin, cos] with omega = 1 / 10000 ** (i / (D / 4))."""
    table = sincos_2d_pos_embed(8, (2, 3))
    assert table.shape == (1, 7, 8) and (table[0, 0] == 0).all()
    row, col = 1, 2
    omega = 1.0 / 10000 ** (torch.arange(2) / 2.0)
    expected = torch.cat(
        [torch.sin(col * omega), torch.cos(col * omega), torch.sin(row * omega), torch.cos(row * omega)]
    )
    assert torch.allclose(table[0, 1 + row * 3 + col], expected.float(), atol=1e-6)


def test_loss_only_on_masked_patches():
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8")
    imgs = torch.randn(2, 3, 32, 32)
    mask = random_mask(2, 16, 0.5, torch.Generator().manual_seed(0))
    out = model(imgs, mask)
    target = normalize_patches(patchify(imgs, 8))
    per_patch = (out["pred"] - target).pow(2).mean(-1)
    assert torch.allclose(out["loss"], per_patch[mask].mean(), atol=1e-6)
    raw = create_model("mae_vit_micro_patch8", norm_pix_loss=False)
    assert torch.allclose(raw.targets(imgs), patchify(imgs, 8))


def test_keep_index_all_patches_equals_plain_path():
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch4")
    imgs = torch.randn(2, 3, 32, 32)
    mask = random_mask(2, 64, 0.75, torch.Generator().manual_seed(1))
    full = model(imgs, mask)
    same = model(imgs, mask, keep_index=torch.arange(64).repeat(2, 1))
    assert torch.allclose(full["pred"], same["pred"], atol=1e-5)
    assert torch.allclose(full["loss"], same["loss"], atol=1e-6)


def test_keep_index_subset_uses_true_positions():
    """Patch-8 setting: the kept quarter, each with its own position; moving the image content changes nothing
    else than the tokens that actually enter."""
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch4")
    imgs = torch.randn(2, 3, 32, 32)
    fg = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    keep = foreground_keep_index(fg, 0.25)
    assert keep.shape == (2, 16)
    mask = random_mask(2, 16, 0.75, torch.Generator().manual_seed(1))
    out = model(imgs, mask, keep)
    assert out["pred"].shape == (2, 16, 48) and out["mask"].shape == (2, 16)
    out["loss"].backward()
    # tokens = projection of the kept patches + the rows of the full position table at their grid indices
    tokens = model.embed_patches(imgs, keep)
    all_tokens = model.embed_patches(imgs)
    assert torch.allclose(tokens, all_tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, 32)), atol=1e-5)
    # pixels outside the kept patches do not affect the output
    other = imgs.clone()
    outside = torch.ones(64, dtype=torch.bool)
    outside[keep[0]] = False
    pix = patchify(other, 4)
    pix[0, outside] = 0.0
    other = unpatchify(pix, 4, (8, 8))
    assert torch.allclose(model(other, mask, keep)["pred"][0], out["pred"][0], atol=1e-5)


def test_bad_inputs():
    model = create_model("mae_vit_micro_patch8")
    imgs = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="imgs must be"):
        model(torch.randn(2, 3, 48, 48), torch.zeros(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        model(imgs, torch.zeros(2, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="same number of masked patches"):
        model(imgs, torch.tensor([[True] * 4 + [False] * 12, [True] * 5 + [False] * 11]))
    with pytest.raises(UserError, match="unknown model 'mae_vit_giant_patch16'"):
        create_model("mae_vit_giant_patch16")
    with pytest.raises(UserError, match="unknown model option"):
        create_model("mae_vit_micro_patch8", embed_dims=3)
    with pytest.raises(UserError, match="not a multiple of patch_size"):
        create_model("mae_vit_micro_patch8", img_size=36)


def test_encoder_state_dict_loads_into_timm_vit():
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8").eval()
    vit = model.encoder_record().build().eval()
    assert type(vit) is VisionTransformer  # a plain timm ViT, no subclass
    vit.load_state_dict(model.encoder_state_dict(), strict=True)
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = vit.forward_features(imgs)
        cls, patches = model.forward_encoder_features(imgs)
    assert torch.allclose(feats[:, 0], cls, atol=1e-5) and torch.allclose(feats[:, 1:], patches, atol=1e-5)
    assert not any(k.startswith("decoder") or k == "mask_token" for k in model.encoder_state_dict())


def test_group_matcher_covers_encoder():
    model = create_model("mae_vit_micro_patch8")
    encoder = {
        k: v
        for k, v in model.named_parameters()
        if k.startswith(("cls_token", "patch_embed", "blocks", "norm."))
    }
    gm = model.group_matcher()
    for name in encoder:
        assert re.match(gm["stem"], name) or any(re.match(pat, name) for pat, _ in gm["blocks"]), name


def test_patchify_round_trip_and_reconstruction():
    imgs = torch.randn(2, 3, 16, 24)
    assert torch.equal(unpatchify(patchify(imgs, 4), 4, (4, 6)), imgs)
    # a perfect norm-pix prediction reconstructs the image with the hidden patches' own statistics
    mask = random_mask(2, 24, 0.75, torch.Generator().manual_seed(0))
    pred = normalize_patches(patchify(imgs, 4))
    rec = reconstruct_images(pred, imgs, mask, 4, stats="target", paste_visible=False)
    assert torch.allclose(rec, imgs, atol=1e-4)
    # with "visible" statistics: exact when every patch has the same mean and variance
    tile = torch.randn(1, 3, 4, 4).repeat(2, 1, 4, 6)
    rec = reconstruct_images(normalize_patches(patchify(tile, 4)), tile, mask, 4, stats="visible")
    assert torch.allclose(rec, tile, atol=1e-4)
    # the patch-8 setting: patches that never entered the model are filled
    keep = torch.tensor([[0, 5], [3, 4]])
    sub_mask = torch.tensor([[True, False], [False, True]])
    rec = reconstruct_images(
        torch.zeros(2, 2, 48), imgs[:, :, :8, :12], sub_mask, 4, keep_index=keep, fill=-7.0
    )
    assert rec.shape == (2, 3, 8, 12) and (patchify(rec, 4)[0, 1] == -7.0).all()
    assert torch.equal(patchify(rec, 4)[0, 5], patchify(imgs[:, :, :8, :12], 4)[0, 5])  # visible pasted back
