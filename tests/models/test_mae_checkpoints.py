"""The official MAE / SemMAE pretraining layouts (tiny checkpoints written here in those layouts) load through the
one encoder loader, :func:`semmae.models.encoder_loading.load_encoder`."""

from __future__ import annotations

import argparse

import pytest
import torch

from semmae.cli import main
from semmae.errors import UserError
from semmae.models import create_model
from semmae.models.encoder_loading import load_encoder


def official_layout(model, **args) -> dict:
    """What facebookresearch/mae's ``misc.save_model`` writes (and SemMAE's, which reuses it)."""
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0]}]},
        "epoch": 799,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model=model.name, mask_ratio=0.75, norm_pix_loss=True, **args),
    }


def encoder_features(model, imgs):
    with torch.no_grad():
        return model.eval().forward_encoder_features(imgs)[0]


def test_official_mae_layout_loads_the_same_encoder(tmp_path):
    torch.manual_seed(0)
    src = create_model("mae_vit_micro_patch8")
    path = tmp_path / "mae_pretrain.pth"
    torch.save(official_layout(src), path)
    loaded = load_encoder(path)  # heads from the release's args.model name (micro: 2)
    vit = loaded.model
    assert loaded.layout == "mae_release" and loaded.num_heads_source == "arch name"
    assert (
        loaded.record.arch() == src.encoder_record().arch() and "decoder_pred.weight" in loaded.dropped_keys
    )
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval()(imgs), encoder_features(src, imgs), atol=1e-5, rtol=1e-5)


def test_semmae_patch8_layout_with_28x28_table(tmp_path):
    """The official SemMAE patch-8 release: a 28x28 + 1 position table, 8x8 projection, DDP-wrapped keys."""
    torch.manual_seed(0)
    src = create_model("mae_vit_micro_patch8", img_size=224)
    state = official_layout(src)
    assert state["model"]["pos_embed"].shape == (1, 28 * 28 + 1, 32)
    state["model"] = {f"module.{k}": v for k, v in state["model"].items()}
    path = tmp_path / "semmae_patch8.pth"
    torch.save(state, path)
    loaded = load_encoder(path)
    vit = loaded.model
    assert loaded.record.img_size == 224 and loaded.checkpoint_grid == 28
    assert torch.equal(vit.pos_embed, src.pos_embed)
    assert torch.equal(vit.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_refuses_missing_and_unexpected_keys(tmp_path):
    model = create_model("mae_vit_micro_patch8")
    state = official_layout(model)
    del state["model"]["blocks.1.mlp.fc2.weight"]
    state["model"]["blocks.0.attn.extra"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as e:
        load_encoder(path)
    assert "missing keys: blocks.1.mlp.fc2.weight" in str(e.value)
    assert "unexpected keys: blocks.0.attn.extra" in str(e.value)


def test_refuses_non_checkpoints(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth"):
        load_encoder(path)
    torch.save({"model": {"a": 1}}, tmp_path / "nomodel.pth")
    with pytest.raises(UserError, match="not a known encoder layout"):
        load_encoder(tmp_path / "nomodel.pth")


def test_cli_is_wired():
    with pytest.raises(SystemExit) as e:
        main(["masks", "show", "--help"])
    assert e.value.code == 0
