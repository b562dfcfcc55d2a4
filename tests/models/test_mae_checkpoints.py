"""Loading the official MAE / SemMAE pretraining layouts (tiny checkpoints written here in those layouts)."""

from __future__ import annotations

import argparse

import pytest
import torch

from semmae.cli import main
from semmae.errors import UserError
from semmae.masking import random_mask
from semmae.models import create_model, load_mae_checkpoint


def official_layout(model, **args) -> dict:
    """What facebookresearch/mae's ``misc.save_model`` writes (and SemMAE's, which reuses it)."""
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0]}]},
        "epoch": 799,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model=model.name, mask_ratio=0.75, norm_pix_loss=True, **args),
    }


def outputs(model, imgs, mask):
    with torch.no_grad():
        return model.eval()(imgs, mask)["pred"]


def test_official_mae_layout_round_trip(tmp_path):
    torch.manual_seed(0)
    src = create_model("mae_vit_micro_patch8")
    path = tmp_path / "mae_pretrain.pth"
    torch.save(official_layout(src), path)
    dst = create_model("mae_vit_micro_patch8")
    meta = load_mae_checkpoint(dst, path)
    assert meta["epoch"] == 799 and meta["args"]["model"] == "mae_vit_micro_patch8"
    imgs = torch.randn(2, 3, 32, 32)
    mask = random_mask(2, 16, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(outputs(src, imgs, mask), outputs(dst, imgs, mask))


def test_semmae_patch8_layout_with_28x28_table(tmp_path):
    """The official SemMAE patch-8 release: a 28x28 + 1 position table, 8x8 projection, 196 patches enter."""
    torch.manual_seed(0)
    src = create_model("mae_vit_micro_patch8", img_size=224)
    state = official_layout(src)
    assert state["model"]["pos_embed"].shape == (1, 28 * 28 + 1, 32)
    assert state["model"]["decoder_pos_embed"].shape == (1, 785, 32)
    # DDP-wrapped key names as some training scripts save them
    state["model"] = {f"module.{k}": v for k, v in state["model"].items()}
    path = tmp_path / "semmae_patch8.pth"
    torch.save(state, path)
    dst = create_model("mae_vit_micro_patch8", img_size=224)
    load_mae_checkpoint(dst, path)
    assert torch.equal(dst.pos_embed, src.pos_embed) and torch.equal(
        dst.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight
    )
    # a patch-8 model at the wrong image size is refused, naming the position table
    with pytest.raises(
        UserError,
        match=r"shape differences: decoder_pos_embed: checkpoint \[1, 785, 32\] vs model \[1, 17, 32\]",
    ):
        load_mae_checkpoint(create_model("mae_vit_micro_patch8"), path)


def test_refuses_missing_and_unexpected_keys(tmp_path):
    model = create_model("mae_vit_micro_patch8")
    state = official_layout(model)
    del state["model"]["decoder_pred.weight"]
    state["model"]["head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as e:
        load_mae_checkpoint(model, path)
    assert "missing keys: decoder_pred.weight" in str(e.value) and "unexpected keys: head.weight" in str(
        e.value
    )


def test_refuses_non_checkpoints(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth"):
        load_mae_checkpoint(create_model("mae_vit_micro_patch8"), path)
    torch.save({"model": {"a": 1}}, tmp_path / "nomodel.pth")
    with pytest.raises(UserError, match="holds no model state dict"):
        load_mae_checkpoint(create_model("mae_vit_micro_patch8"), tmp_path / "nomodel.pth")


def test_bare_state_dict_written_with_plain_data(tmp_path):
    model = create_model("mae_vit_micro_patch4")
    path = tmp_path / "plain.pth"
    torch.save({"model": model.state_dict(), "config": model.config_dict()}, path)
    assert torch.load(path, weights_only=True)["config"]["name"] == "mae_vit_micro_patch4"
    assert load_mae_checkpoint(create_model("mae_vit_micro_patch4"), path) == {}


def test_cli_is_wired():
    with pytest.raises(SystemExit) as e:
        main(["masks", "show", "--help"])
    assert e.value.code == 0
