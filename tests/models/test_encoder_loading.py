"""Every supported checkpoint layout, written from a tiny ViT (patch 8, dim 32, depth 2), loads back into an encoder
that computes exactly what the original computed."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.models.encoder_loading import load_encoder, read_checkpoint
from semmae.models.encoder_record import EncoderRecord
from semmae.models.vit_ops import encoder_tokens, pooled_features

CFG = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def tiny_vit(img_size=32, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(
        img_size=img_size, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0, **kw
    )
    with torch.no_grad():  # make every parameter non-trivial so a mis-load changes the output
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def decoder_keys() -> dict[str, torch.Tensor]:
    return {
        "mask_token": torch.zeros(1, 1, 16),
        "decoder_embed.weight": torch.zeros(16, 32),
        "decoder_pos_embed": torch.zeros(1, 17, 16),
        "decoder_blocks.0.norm1.weight": torch.ones(16),
        "decoder_pred.weight": torch.zeros(192, 16),
    }


@pytest.fixture(scope="module")
def ref() -> VisionTransformer:
    return tiny_vit()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def write_layout(layout: str, sd: dict, tmp_path) -> tuple[str, dict]:
    """Save ``sd`` in ``layout``; return (path, extra load_encoder kwargs needed for that layout)."""
    path = tmp_path / f"{layout}.pth"
    ns = argparse.Namespace
    if layout == "semmae_pretrain":
        obj = {"model": {**sd, **decoder_keys()}, "model_config": dict(CFG), "epoch": 3}
        torch.save(obj, path)
        return str(path), {}
    if layout == "safetensors":
        path = tmp_path / "enc.safetensors"
        save_file(
            {k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"model_config": json.dumps(CFG)}
        )
        return str(path), {}
    if layout == "mae_release":
        obj = {
            "model": {**sd, **decoder_keys()},
            "optimizer": {},
            "epoch": 799,
            "args": ns(model="mae_vit_base_patch16"),
        }
    elif layout == "mae_release_weights_only":
        obj = {"model": dict(sd)}
    elif layout == "timm":
        obj = {**sd, "head.weight": torch.zeros(5, 32), "head.bias": torch.zeros(5)}
    elif layout == "ibot":
        teacher = {f"backbone.{k}": v for k, v in sd.items()}
        teacher.update(
            {
                "backbone.masked_embed": torch.zeros(1, 32),
                "head.mlp.0.weight": torch.zeros(8, 32),
                "head.last_layer2.weight_g": torch.ones(1, 8),
            }
        )
        student = {f"module.{k}": v + 1 for k, v in teacher.items()}
        obj = {"teacher": teacher, "student": student, "epoch": 5, "args": ns(arch="vit_small", patch_size=8)}
    elif layout == "ibot_released":
        obj = {"state_dict": {**sd, "masked_embed": torch.zeros(1, 32)}}
    elif layout == "dino":
        teacher = {f"backbone.{k}": v for k, v in sd.items()}
        teacher.update(
            {"head.mlp.0.weight": torch.zeros(8, 32), "head.last_layer.weight_v": torch.zeros(16, 8)}
        )
        student = {f"module.{k}": v + 1 for k, v in teacher.items()}
        obj = {"teacher": teacher, "student": student, "args": ns(arch="vit_small"), "dino_loss": {}}
    elif layout == "dino_student_only":
        obj = {"student": {f"module.backbone.{k}": v for k, v in sd.items()}}
    else:
        raise AssertionError(layout)
    torch.save(obj, path)
    return str(path), {"num_heads": 2}  # heads are not in the weights; dim 32 is no standard size


EXPECTED_LAYOUT = {
    "semmae_pretrain": "semmae_pretrain",
    "safetensors": "safetensors",
    "mae_release": "mae_release",
    "mae_release_weights_only": "mae_release",
    "timm": "timm",
    "ibot": "ibot",
    "ibot_released": "ibot",
    "dino": "dino",
    "dino_student_only": "dino",
}


@pytest.mark.parametrize("layout", sorted(EXPECTED_LAYOUT))
def test_every_layout_loads_to_the_same_encoder(layout, ref, images, tmp_path):
    path, kw = write_layout(layout, ref.state_dict(), tmp_path)
    loaded = load_encoder(path, **kw)
    model = loaded.model
    model.eval()
    assert loaded.layout == EXPECTED_LAYOUT[layout]
    assert loaded.record.embed_dim == 32 and loaded.record.depth == 2 and loaded.record.patch_size == 8
    assert loaded.record.img_size == 32 and loaded.pos_embed_resampled is None
    with torch.no_grad():
        torch.testing.assert_close(model(images), ref(images), rtol=0, atol=0)
    if layout in ("semmae_pretrain", "mae_release"):
        assert "mask_token" in loaded.dropped_keys and "decoder_embed.weight" in loaded.dropped_keys
    if layout == "ibot":
        assert loaded.which == "teacher" and "backbone.masked_embed" in loaded.dropped_keys


def test_pickled_namespace_needs_the_allow_list(ref, tmp_path):
    path, _ = write_layout("mae_release", ref.state_dict(), tmp_path)
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path, weights_only=True)
    layout, _, hints = read_checkpoint(path)
    assert layout == "mae_release" and hints["arch"] == "mae_vit_base_patch16"


def test_semmae_patch8_release_with_28x28_style_table(images, tmp_path):
    """SemMAE's patch-8 setting trains on 112 px crops but stores the 224 px (28x28+1) position table: the
    encoder is evaluated at the table's size by default (here tiny: 8x8+1 table, 32 px crops -> 64 px)."""
    big = tiny_vit(img_size=64)
    obj = {"model": {**big.state_dict(), **decoder_keys()}, "args": argparse.Namespace(input_size=32)}
    torch.save(obj, tmp_path / "semmae_p8.pth")
    loaded = load_encoder(tmp_path / "semmae_p8.pth", num_heads=2)
    model = loaded.model
    assert loaded.record.img_size == 64 and loaded.checkpoint_grid == 8
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), big(x), rtol=0, atol=0)
    loaded = load_encoder(tmp_path / "semmae_p8.pth", num_heads=2, img_size=32)
    small = loaded.model
    assert loaded.pos_embed_resampled == (8, 4)
    assert small.pos_embed.shape == (1, 17, 32)
    torch.testing.assert_close(small.pos_embed[:, 0], big.pos_embed[:, 0])  # the class token's entry is kept


def test_position_table_resampling_is_bicubic_and_keeps_constant_tables(tmp_path):
    sd = tiny_vit().state_dict()
    sd["pos_embed"] = torch.cat([torch.full((1, 1, 32), 3.0), torch.full((1, 16, 32), 0.5)], dim=1)
    torch.save(sd, tmp_path / "c.pth")
    loaded = load_encoder(tmp_path / "c.pth", num_heads=2, img_size=48)
    model = loaded.model
    assert loaded.pos_embed_resampled == (4, 6)
    assert model.pos_embed.shape == (1, 37, 32)
    torch.testing.assert_close(model.pos_embed[0, 0], torch.full((32,), 3.0))
    torch.testing.assert_close(model.pos_embed[0, 1:], torch.full((36, 32), 0.5))
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 32)


def test_global_pool_finetuned_checkpoint_keeps_its_fc_norm(images, tmp_path):
    ft = tiny_vit(global_pool="avg", fc_norm=True)
    torch.save(
        {"model": {**ft.state_dict(), "head.weight": torch.zeros(3, 32), "head.bias": torch.zeros(3)}},
        tmp_path / "ft.pth",
    )
    loaded = load_encoder(tmp_path / "ft.pth", num_heads=2)
    model = loaded.model
    assert loaded.record.global_pool == "avg" and loaded.fresh_keys == []
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), ft(images), rtol=0, atol=0)


def test_pretrain_checkpoint_in_global_pool_mode_gets_a_fresh_fc_norm(ref, images, tmp_path):
    """The MAE fine-tune recipe: the final norm is dropped, fc_norm starts at identity (weight 1, bias 0)."""
    path, kw = write_layout("semmae_pretrain", ref.state_dict(), tmp_path)
    loaded = load_encoder(path, global_pool="avg")
    model = loaded.model
    assert loaded.fresh_keys == ["fc_norm.bias", "fc_norm.weight"] and "norm.weight" in loaded.dropped_keys
    torch.testing.assert_close(model.fc_norm.weight, torch.ones(32))
    with torch.no_grad():
        tokens = ref.forward_features(images)  # includes ref's final norm; undo by running blocks manually
        x = ref._pos_embed(ref.patch_embed(images))
        for blk in ref.blocks:
            x = blk(x)
        expected = torch.nn.functional.layer_norm(x[:, 1:].mean(1), (32,), eps=1e-6)
        torch.testing.assert_close(model.eval()(images), expected, rtol=1e-5, atol=1e-5)
    assert tokens.shape == (2, 17, 32)


def test_mismatched_checkpoints_are_refused_with_the_keys(ref, tmp_path):
    sd = dict(ref.state_dict())
    del sd["blocks.1.attn.proj.weight"]
    sd["blocks.0.attn.extra"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(
        UserError,
        match=r"missing keys: blocks\.1\.attn\.proj\.weight.*unexpected keys: blocks\.0\.attn\.extra",
    ):
        load_encoder(tmp_path / "bad.pth", num_heads=2)
    sd = dict(ref.state_dict())
    sd["blocks.0.norm1.weight"] = torch.ones(7)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(UserError, match=r"shape differences: blocks\.0\.norm1\.weight"):
        load_encoder(tmp_path / "shape.pth", num_heads=2)
    torch.save(ref.state_dict(), tmp_path / "ok.pth")
    with pytest.raises(UserError, match="does not match the checkpoint"):
        load_encoder(tmp_path / "ok.pth", arch="vit_base_patch16")
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(UserError, match="not a known encoder layout"):
        load_encoder(tmp_path / "odd.pth")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "cnn.pth")
    with pytest.raises(UserError, match="no ViT encoder"):
        load_encoder(tmp_path / "cnn.pth")
    with pytest.raises(UserError, match="does not exist"):
        load_encoder(tmp_path / "nope.pth")


def test_heads_come_from_the_standard_table_when_unnamed():
    sd = {
        "patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
        "cls_token": torch.zeros(1, 1, 768),
        "pos_embed": torch.zeros(1, 197, 768),
        "blocks.11.norm1.weight": torch.zeros(768),
        "blocks.0.mlp.fc1.weight": torch.zeros(3072, 768),
    }
    spec, source = EncoderRecord.from_state_dict(sd)
    assert (spec.num_heads, spec.depth, spec.patch_size, spec.img_size, spec.mlp_ratio) == (
        12,
        12,
        16,
        224,
        4.0,
    )
    assert source == "default table"
    spec, source = EncoderRecord.from_state_dict(sd, hints={"num_heads": 6})
    assert spec.num_heads == 6 and source == "model_config"
    spec, source = EncoderRecord.from_state_dict(sd, arch="vit_base_patch16")
    assert spec.num_heads == 12 and source == "arch name"
    spec, source = EncoderRecord.from_state_dict(sd, num_heads=4, arch="vit_small_patch16")  # width differs
    assert spec.num_heads == 4 and source == "argument"


def test_random_init_has_the_checkpoint_architecture_but_not_its_weights(ref, tmp_path):
    path, _ = write_layout("semmae_pretrain", ref.state_dict(), tmp_path)
    loaded = load_encoder(path, random_init=True)
    model = loaded.model
    assert loaded.random_init and loaded.record.embed_dim == 32 and loaded.record.num_heads == 2
    assert not torch.equal(model.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    plain = load_encoder(
        None, arch="vit_tiny_patch8", random_init=True, img_size=32, embed_dim=32, depth=2, num_heads=2
    )
    assert plain.record.patch_size == 8 and plain.model(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    with pytest.raises(UserError, match="--random-init"):
        load_encoder(None)
    with pytest.raises(UserError, match="needs --arch"):
        load_encoder(None, random_init=True)


def test_feature_helpers_split_class_and_patch_tokens(ref, images):
    with torch.no_grad():
        cls, patches = encoder_tokens(ref, images)
        tokens = ref.forward_features(images)
        assert cls.shape == (2, 32) and patches.shape == (2, 16, 32)
        torch.testing.assert_close(cls, tokens[:, 0])
        torch.testing.assert_close(pooled_features(ref, images, "avg"), tokens[:, 1:].mean(1))
        torch.testing.assert_close(pooled_features(ref, images, "token"), ref(images))


def test_random_init_of_an_mae_checkpoint_starts_where_mae_pretraining_starts(ref, tmp_path):
    from semmae.models import create_model
    from semmae.models.init_schemes import resolve_init_scheme
    from semmae.models.pos_embed import sincos_2d_pos_embed

    path, _ = write_layout("semmae_pretrain", ref.state_dict(), tmp_path)
    loaded = load_encoder(path, random_init=True)  # auto -> mae for this package's checkpoints
    model = loaded.model
    assert loaded.init == "mae"
    assert torch.equal(model.pos_embed, sincos_2d_pos_embed(32, (4, 4)))  # fixed 2-D sin-cos, zero class row
    qkv = model.blocks[0].attn.qkv.weight.detach()
    bound = (6.0 / (qkv.shape[0] + qkv.shape[1])) ** 0.5  # xavier-uniform
    assert float(qkv.abs().max()) <= bound and float(qkv.std()) == pytest.approx(bound / 3**0.5, rel=0.1)
    assert torch.all(model.blocks[0].attn.qkv.bias == 0) and torch.all(model.blocks[1].norm1.weight == 1)
    # the same statistics as the package's own MAE at step 0
    mae = create_model("mae_vit_tiny_patch8", img_size=32, embed_dim=32, depth=2, num_heads=2)
    assert torch.equal(mae.pos_embed, model.pos_embed)
    w = mae.blocks[0].attn.qkv.weight.detach()
    assert float(w.std()) == pytest.approx(float(qkv.std()), rel=0.1)

    timm_init = load_encoder(path, random_init=True, init="timm")
    timm_model = timm_init.model
    assert timm_init.init == "timm" and not torch.equal(timm_model.pos_embed, model.pos_embed)
    assert float(timm_model.blocks[0].attn.qkv.weight.detach().std()) == pytest.approx(
        0.02, rel=0.15
    )  # trunc normal
    plain = load_encoder(
        None, arch="vit_tiny_patch8", random_init=True, img_size=32, embed_dim=32, depth=2, num_heads=2
    )
    assert plain.init == "timm"  # no checkpoint: nothing says the encoder is MAE's
    assert (
        resolve_init_scheme("auto", "ibot") == "timm" and resolve_init_scheme("auto", "mae_release") == "mae"
    )
    with pytest.raises(ValueError, match="init scheme"):
        resolve_init_scheme("xavier", None)


def test_a_record_rebuilds_the_encoder_timm_builds_for_its_name():
    """encoder_from_record is the one road from a record to a model: with timm's init it draws the weights
    timm.create_model draws for the same plain ViT (same seed, same RNG use), so random-init part encoders built
    either way are the same."""
    import timm

    from semmae.models.encoder_loading import encoder_from_record

    record = EncoderRecord.from_name("vit_tiny_patch16_224", img_size=32)
    assert (record.embed_dim, record.depth, record.num_heads, record.img_size) == (192, 12, 3, 32)
    torch.manual_seed(3)
    ours = encoder_from_record(record, init="timm")
    after_ours = torch.randn(3)
    torch.manual_seed(3)
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    assert torch.equal(torch.randn(3), after_ours)
    assert ours.random_init and ours.init == "timm" and ours.fresh_keys == sorted(theirs.state_dict())
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.model.state_dict().items())
    # from weights: loaded strictly, position table resampled to the record's grid
    half = encoder_from_record(record.replace(img_size=64), ours.model.state_dict())
    assert not half.random_init and half.pos_embed_resampled == (2, 4)
    assert torch.equal(half.model.blocks[3].mlp.fc1.weight, ours.model.blocks[3].mlp.fc1.weight)
    with pytest.raises(
        UserError, match="the part checkpoint's encoder does not fit.*missing keys: norm.bias"
    ):
        sd = {k: v for k, v in ours.model.state_dict().items() if k != "norm.bias"}
        encoder_from_record(record, sd, source="the part checkpoint's encoder")


def test_only_plain_vit_names_make_records():
    assert EncoderRecord.from_name("vit_small_patch16_224").img_size == 224
    assert EncoderRecord.from_name("mae_vit_micro_patch8", 32).arch() == {
        **CFG,
        **{"mlp_ratio": 4.0, "qkv_bias": True, "in_chans": 3, "global_pool": "token"},
    }
    odd = EncoderRecord.from_name("vit_d48x3h4_patch8", 64)
    assert (odd.embed_dim, odd.depth, odd.num_heads, odd.grid) == (48, 3, 4, 8)
    assert EncoderRecord.from_name(odd.timm_name()) == odd  # timm_name is read back
    for name in ("deit3_small_patch16_224", "vit_small_patch14_reg4_dinov2", "resnet50", "vit_small"):
        with pytest.raises(UserError, match="not a plain ViT name"):
            EncoderRecord.from_name(name)


def test_stage_checkpoints_tell_their_encoder_record():
    """The checkpoint schema reads the encoder record of every checkpoint kind this project wrote."""
    from semmae.models.checkpoint_schema import TrainState

    def record(ckpt):
        return TrainState.from_dict(ckpt).encoder

    rec = EncoderRecord(**CFG, name="mae_vit_micro_patch8", fg_keep=0.25)
    assert record({"encoder": rec.to_dict()}) == rec  # every stage
    spec = rec.replace(global_pool="avg").arch()
    seg = record({"encoder": {"spec": spec, "layout": "timm", "random_init": False}})
    assert seg == EncoderRecord(**spec)  # segment train, before the one layout
    assert record({"encoder_spec": spec}) == EncoderRecord(**spec)  # finetune best.pth, before the one layout
    mae_config = {**CFG, "name": "mae_vit_micro_patch8", "decoder_depth": 1}
    assert (
        record({"model_config": mae_config, "config": {"fg_keep": 0.25}}) == rec
    )  # pretrain, before "encoder"
    assert record({"encoder": {"arch": "vit_small_patch16_224"}}) is None  # a part checkpoint's spec


def test_the_results_summary_names_layout_sizes_and_init(ref, tmp_path):
    path, _ = write_layout("semmae_pretrain", ref.state_dict(), tmp_path)
    summary = load_encoder(path, img_size=48).summary()
    assert summary == {
        "layout": "semmae_pretrain",
        "spec": {
            **CFG,
            "img_size": 48,
            "mlp_ratio": 4.0,
            "qkv_bias": True,
            "in_chans": 3,
            "global_pool": "token",
        },
        "pos_embed_resampled": (4, 6),
        "num_heads_source": "record",
        "init": None,
    }
    assert load_encoder(path, random_init=True).summary()["init"] == "mae"
