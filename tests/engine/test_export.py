"""`semmae export` copies the encoder keys of a checkpoint (no MAE rebuilt) with its encoder record, and files
written the old way (the MAE's model_config in the metadata) still load."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import pretrain_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file, save

from semmae.errors import UserError
from semmae.export.encoder import export_encoder
from semmae.models import create_model
from semmae.models.encoder_loading import load_encoder
from semmae.models.encoder_record import EncoderRecord, parse_arch

# what the previous export kept of an MAE state dict (MaskedAutoencoder.encoder_state_dict then)
OLD_ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


@pytest.fixture
def mae():
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8")
    with torch.no_grad():  # every weight non-trivial, so a mixed-up key changes the values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata())


def test_export_copies_the_encoder_tensors_of_the_previous_export(mae, tmp_path):
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae, fg_keep=0.25)
    out = export_encoder(tmp_path / "ckpt.pth", tmp_path / "enc.safetensors")
    got = load_file(str(out))
    want = {k: v for k, v in mae.state_dict().items() if k.startswith(OLD_ENCODER_PREFIXES)}
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    meta = metadata(out)
    # what the previous readers take from the metadata: heads, image size, the timm name and fg_keep
    config = json.loads(meta["model_config"])
    assert (config["num_heads"], config["img_size"], config["embed_dim"]) == (2, 32, 32)
    assert meta["arch"] == "vit_micro_patch8_32" and meta["fg_keep"] == "0.25"  # its real size (issue 29)
    record = EncoderRecord.from_dict(config)
    assert record == mae.encoder_record().replace(fg_keep=0.25)
    loaded = load_encoder(out)
    vit = loaded.model
    assert loaded.num_heads_source == "record" and loaded.record.fg_keep == 0.25
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls, _ = mae.forward_encoder_features(x)
        torch.testing.assert_close(vit.eval()(x), cls, atol=1e-5, rtol=1e-5)


def test_export_of_a_ddp_wrapped_checkpoint_strips_the_prefix(mae, tmp_path):
    ckpt = pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    ckpt["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "ddp.pth")
    got = load_file(str(export_encoder(tmp_path / "ddp.pth", tmp_path / "enc.safetensors")))
    assert torch.equal(got["blocks.1.mlp.fc2.weight"], mae.blocks[1].mlp.fc2.weight)
    assert "fg_keep" not in metadata(tmp_path / "enc.safetensors")  # the config did not say


def test_export_refuses_weights_that_do_not_match_the_model_config(mae, tmp_path):
    ckpt = pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    ckpt["model_config"] = {**ckpt["model_config"], "depth": 3}
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"does not match its model_config: missing keys: blocks\.2\."):
        export_encoder(tmp_path / "bad.pth", tmp_path / "enc.safetensors")
    with pytest.raises(UserError, match=r"name it \*\.safetensors"):
        export_encoder(tmp_path / "ckpt.pth", tmp_path / "enc.pth")


def test_exports_written_the_old_way_still_load(mae, tmp_path):
    """The previous export stored the MAE's whole model_config (decoder fields included) and fg_keep apart."""
    enc = {k: v.contiguous() for k, v in mae.state_dict().items() if k.startswith(OLD_ENCODER_PREFIXES)}
    meta = {
        "format": "pt",
        "model_config": json.dumps(mae.config_dict()),
        "arch": "vit_base_patch8_32",
        "fg_keep": "0.25",
    }
    (tmp_path / "old.safetensors").write_bytes(save(enc, metadata=meta))
    loaded = load_encoder(tmp_path / "old.safetensors")
    vit = loaded.model
    assert loaded.record.name == "mae_vit_micro_patch8" and loaded.record.fg_keep == 0.25
    assert loaded.record.arch() == mae.encoder_record().arch() and loaded.num_heads_source == "record"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval()(x), mae.forward_encoder_features(x)[0], atol=1e-5, rtol=1e-5)
    # a bootstrap export: the teacher's spec, trainer and objective in model_config
    boot = {
        **{k: mae.config_dict()[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")}
    }
    boot.update(name="vit_micro_patch8", mlp_ratio=4.0, trainer="bootstrap", objective="ibot")
    meta = {"format": "pt", "model_config": json.dumps(boot), "arch": "vit_base_patch8_32"}
    (tmp_path / "boot.safetensors").write_bytes(save(enc, metadata=meta))
    loaded = load_encoder(tmp_path / "boot.safetensors")
    assert loaded.record.trainer == "bootstrap" and loaded.record.fg_keep is None


def test_record_round_trips_and_refuses_what_it_cannot_read():
    record = EncoderRecord(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, fg_keep=0.25)
    data = json.loads(json.dumps(record.to_dict()))
    assert data["format"] == "semmae-encoder" and data["version"] == 1
    assert EncoderRecord.from_dict(data) == record
    with pytest.raises(UserError, match="unknown field"):
        EncoderRecord.from_dict({**data, "objective": "ibot"})
    with pytest.raises(UserError, match="version 2"):
        EncoderRecord.from_dict({**data, "version": 2})
    with pytest.raises(UserError, match="lacks the encoder size"):
        EncoderRecord.from_dict({k: v for k, v in data.items() if k != "depth"})
    with pytest.raises(UserError, match="does not divide"):
        record.replace(num_heads=3)
    assert record.timm_name() == "vit_micro_patch8_32"
    # the CPU presets' size (width 192, 6 blocks) is no timm size: the name says its real shape
    tiny6 = record.replace(embed_dim=192, depth=6, num_heads=3, img_size=64)
    assert tiny6.timm_name() == "vit_d192x6h3_patch8_64"
    assert parse_arch(tiny6.timm_name()) == dict(
        embed_dim=192, depth=6, num_heads=3, patch_size=8, img_size=64
    )
    assert record.replace(embed_dim=384, depth=12, num_heads=6, img_size=224).timm_name() == (
        "vit_small_patch8_224"
    )
    # issue 29: a width-192 depth-6 encoder was exported as "vit_base_patch8_64"
    assert (
        record.replace(embed_dim=192, depth=6, num_heads=3, img_size=64).timm_name() != "vit_base_patch8_64"
    )


def test_a_checkpoint_that_carries_its_record_is_read_through_it(mae, tmp_path):
    """What `semmae pretrain` may write: ``"encoder": EncoderRecord.from_mae_config(model_config, fg_keep)``."""
    ckpt = pretrain_checkpoint(tmp_path / "ckpt.pth", mae, fg_keep=1.0)
    ckpt["encoder"] = EncoderRecord.from_mae_config(ckpt["model_config"], fg_keep=0.5).to_dict()
    torch.save(ckpt, tmp_path / "rec.pth")
    loaded = load_encoder(tmp_path / "rec.pth")
    assert (
        loaded.layout == "semmae_pretrain"
        and loaded.record.fg_keep == 0.5
        and loaded.record.to_dict() == ckpt["encoder"]
    )
    out = export_encoder(tmp_path / "rec.pth", tmp_path / "enc.safetensors")
    assert json.loads(metadata(out)["model_config"]) == ckpt["encoder"] and metadata(out)["fg_keep"] == "0.5"
