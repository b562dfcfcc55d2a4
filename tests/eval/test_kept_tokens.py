"""Kept-quarter evaluation of patch-8 encoders (paper Sec. 4.1): the kept forward equals what pretraining ran, the
kept set is the most-foreground quarter with unbiased, batch-independent ties, and the commands use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCacheWriter
from semmae.eval.common import CENTER, build_view_datasets
from semmae.eval.config import EvalCommonConfig
from semmae.eval.kept_tokens import resolve_kept_tokens
from semmae.models import create_model
from semmae.models.foreground import encoder_foreground
from semmae.models.kept_tokens import KeptTokens
from semmae.models.vit_ops import forward_tokens

COMMON = ["--num-workers", "0", "--device", "cpu", "--batch-size", "8"]
TINY4 = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)  # an 8 x 8 grid of 4-px patches


def test_all_indices_equal_timm_forward_features():
    torch.manual_seed(0)
    vit = VisionTransformer(num_classes=0, **TINY4).eval()
    x = torch.randn(3, 3, 32, 32)
    everything = torch.arange(64).expand(3, -1)
    torch.testing.assert_close(forward_tokens(vit, x, keep_index=everything), vit.forward_features(x))


def test_kept_forward_is_the_pretraining_encoder_on_the_same_patches():
    """The encoder the evaluations load from a pretraining checkpoint, fed ``keep_index``, gives the same latent
    as MAE pretraining with that ``keep_index`` and nothing masked (same tokens, same positions)."""
    torch.manual_seed(1)
    mae = create_model("mae_vit_tiny_patch8", img_size=32, patch_size=4, depth=2, decoder_depth=1).eval()
    vit = mae.encoder_record().build().eval()
    vit.load_state_dict(mae.encoder_state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    keep = torch.stack([torch.randperm(64)[:16].sort().values for _ in range(2)])
    with torch.no_grad():
        latent = mae.forward_encoder(mae.embed_patches(x, keep), torch.arange(16).expand(2, -1))
        ours = forward_tokens(vit, x, keep_index=keep)
    torch.testing.assert_close(ours, latent, rtol=1e-4, atol=1e-5)
    # and it is not the all-patch representation
    assert not torch.allclose(ours[:, 0], vit.forward_features(x)[:, 0], atol=1e-3)


def test_keep_index_takes_the_top_quarter_and_ties_do_not_depend_on_the_batch():
    keep = KeptTokens(0.25, "cache", seed=3)
    fg = torch.zeros(4, 64)
    fg[:, 40:50] = 1.0  # 10 certain cells, then 6 of the 54 tied zeros at the cut
    idx = keep.keep_index(fg, torch.tensor([7, 8, 9, 10]))
    assert idx.shape == (4, 16)
    for row in idx:
        assert set(range(40, 50)) <= set(row.tolist()) and row.tolist() == sorted(row.tolist())
    # image 9 alone, or in another batch, keeps exactly the same cells
    alone = keep.keep_index(fg[2:3], torch.tensor([9]))
    torch.testing.assert_close(alone[0], idx[2])
    # different images break the ties differently; over many images every tied cell is drawn about equally
    many = keep.keep_index(torch.zeros(600, 64), torch.arange(600))
    counts = torch.bincount(many.flatten(), minlength=64).float()
    assert counts.sum() == 600 * 16
    expected = 600 * 16 / 64
    assert (counts - expected).abs().max() < 0.35 * expected  # no raster-order (top-row) bias
    assert counts[:32].sum() / counts.sum() == pytest.approx(0.5, abs=0.03)


def test_batched_keep_index_equals_the_per_image_reference():
    from semmae.masking import foreground_keep_index
    from semmae.models.kept_tokens import tie_noise

    keep = KeptTokens(0.25, "cache", seed=5)
    fg = (torch.rand(6, 64, generator=torch.Generator().manual_seed(0)) * 4).floor()  # many ties
    index = torch.tensor([3, 17, 0, 1000, 42, 9])
    batched = keep.keep_index(fg, index)
    for b, i in enumerate(index.tolist()):
        # image i alone: its own noise row, the generic foreground keep on one image
        ref = foreground_keep_index(fg[b : b + 1], 0.25, noise=tie_noise(5, torch.tensor([i]), 64))
        assert torch.equal(batched[b], ref[0]), i
    assert torch.equal(keep.keep_index(fg.flip(0), index.flip(0)), batched.flip(0))  # order-free
    assert not torch.equal(KeptTokens(0.25, "cache", seed=6).keep_index(fg, index), batched)  # seeded


def test_attention_foreground_is_normalised_per_image():
    torch.manual_seed(2)
    vit = VisionTransformer(num_classes=0, **TINY4).eval()
    fg = encoder_foreground(vit, torch.randn(2, 3, 32, 32))
    assert fg.shape == (2, 64)
    torch.testing.assert_close(fg.min(1).values, torch.zeros(2))
    torch.testing.assert_close(fg.max(1).values, torch.ones(2))


def test_auto_follows_the_checkpoint():
    assert resolve_kept_tokens("auto", None, False, 1.0, 0) is None
    assert resolve_kept_tokens("auto", None, False, None, 0) is None
    k = resolve_kept_tokens("auto", None, True, 0.25, 5)
    assert k == KeptTokens(0.25, "cache", 5)
    assert resolve_kept_tokens("all", None, False, 0.25, 0) is None
    assert resolve_kept_tokens("kept", None, False, None, 0) == KeptTokens(0.25, "attention", 0)
    assert resolve_kept_tokens("kept", 0.5, False, 0.25, 0).fraction == 0.5


# ------------------------------------------------------------------------------------------------- end to end
def _pretrain_ckpt(path: Path, fg_keep: float) -> Path:
    torch.manual_seed(0)
    vit = VisionTransformer(num_classes=0, **TINY4)
    torch.save(
        {"model": vit.state_dict(), "model_config": dict(TINY4), "config": {"fg_keep": fg_keep}, "epoch": 0},
        path,
    )
    return path


def _cache(folder: Path, out: Path, fg_rows: slice) -> Path:
    """A part cache of ``folder`` on the 8 x 8 grid whose foreground is 1 on the given rows, 0 elsewhere."""
    files = ImageFolderDataset(folder).relative_paths
    w = PartCacheWriter(out, files, grid=8, num_parts=2, producer={"test": True}, overwrite=False)
    fg = np.zeros((len(files), 8, 8))
    fg[:, fg_rows] = 1.0
    w.write(0, np.zeros((len(files), 8, 8), dtype=np.int64), fg)
    w.finalize()
    return out


def test_cached_foreground_follows_the_eval_crop(tiny_data, tmp_path):
    train_cache = _cache(tiny_data / "train", tmp_path / "train.cache", slice(0, 2))
    val_cache = _cache(tiny_data / "val", tmp_path / "val.cache", slice(0, 2))
    cfg = EvalCommonConfig(
        data=str(tiny_data),
        checkpoint="x",
        train_parts=str(train_cache),
        val_parts=str(val_cache),
        crop_pct=1.0,
    )
    train, _ = build_view_datasets(cfg, 32, 4, CENTER)
    fg = train[0]["fg"].reshape(8, 8)
    assert fg[:2].eq(1).all() and fg[2:].eq(0).all()  # crop_pct 1 on square images: the cache's own cells
    cfg.crop_pct = 0.5  # resize to 64, center-crop 32: the top quarter of the image (rows 0-1) is cut away
    train, _ = build_view_datasets(cfg, 32, 4, CENTER)
    assert train[0]["fg"].eq(0).all()


def test_knn_and_linprobe_feed_the_kept_quarter(tiny_data, tmp_path):
    ckpt = _pretrain_ckpt(tmp_path / "p8.pth", 0.25)

    def knn(name, *extra):
        out = tmp_path / name
        argv = ["knn", "--data", str(tiny_data), "--checkpoint", str(ckpt), "--out", str(out), "--k", "3"]
        assert main([*argv, *COMMON, *extra]) == 0
        return json.loads((out / "results.json").read_text())

    auto = knn("auto")
    assert auto["tokens"] == "kept" and auto["keep_fraction"] == 0.25 and auto["foreground"] == "attention"
    every = knn("all", "--tokens", "all")
    assert every["tokens"] == "all" and "keep_fraction" not in every

    caches = [
        "--train-parts",
        str(_cache(tiny_data / "train", tmp_path / "tr.cache", slice(0, 2))),
        "--val-parts",
        str(_cache(tiny_data / "val", tmp_path / "va.cache", slice(0, 2))),
    ]
    cached = knn("cached", *caches)
    assert cached["foreground"] == "cache"

    # the fast probe's features really are the kept-token class tokens: compare with a direct computation
    out = tmp_path / "probe"
    argv = [
        "linprobe",
        "--mode",
        "fast",
        "--data",
        str(tiny_data),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
    ]
    assert main([*argv, "--epochs", "2", "--warmup-epochs", "0", "--crop-pct", "1", *caches, *COMMON]) == 0
    feats = torch.load(out / "features.pt", weights_only=True)
    assert feats["key"]["tokens"] == "kept" and feats["key"]["foreground"] == "cache"
    torch.manual_seed(0)
    vit = VisionTransformer(num_classes=0, **TINY4).eval()
    vit.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    train, _ = build_view_datasets(
        EvalCommonConfig(
            data=str(tiny_data), checkpoint="x", train_parts=caches[1], val_parts=caches[3], crop_pct=1.0
        ),
        32,
        4,
        CENTER,
    )
    item = train[0]
    rows = torch.arange(16)  # the cache marks rows 0-1 = cells 0..15 as foreground: no ties, no randomness
    with torch.no_grad():
        direct = forward_tokens(vit, item["image"][None], keep_index=rows[None])[0, 0]
    torch.testing.assert_close(feats["train_x"][0], direct, rtol=1e-4, atol=1e-5)


def test_bad_kept_token_flags_are_one_line(tiny_data, tmp_path, capsys):
    ckpt = _pretrain_ckpt(tmp_path / "p8.pth", 0.25)
    base = ["--data", str(tiny_data), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), *COMMON]
    assert main(["knn", *base, "--train-parts", str(tmp_path)]) == 2
    assert "both --train-parts and --val-parts" in capsys.readouterr().err
    assert main(["knn", *base, "--keep-fraction", "0"]) == 2
    assert "--keep-fraction must be in (0, 1]" in capsys.readouterr().err
    assert main(["finetune", *base, "--tokens", "kept"]) == 2
    assert "fine-tuning feeds every patch" in capsys.readouterr().err
    # a cache on another grid than the encoder's is refused, naming both grids
    files = ImageFolderDataset(tiny_data / "train").relative_paths
    w = PartCacheWriter(tmp_path / "g4.cache", files, grid=4, num_parts=2, producer={}, overwrite=False)
    w.write(0, np.zeros((len(files), 4, 4), dtype=np.int64), np.zeros((len(files), 4, 4)))
    w.finalize()
    val = _cache(tiny_data / "val", tmp_path / "v8.cache", slice(0, 2))
    assert main(["knn", *base, "--train-parts", str(tmp_path / "g4.cache"), "--val-parts", str(val)]) == 2
    err = capsys.readouterr().err
    assert "4x4 grid" in err and "8x8" in err and err.count("\n") == 1


def test_fg_keep_travels_through_pretrain_and_safetensors_checkpoints(tmp_path):
    from safetensors.torch import save_file

    from semmae.models.encoder_loading import load_encoder

    loaded = load_encoder(_pretrain_ckpt(tmp_path / "p.pth", 0.25))
    assert loaded.record.fg_keep == 0.25
    vit = VisionTransformer(num_classes=0, **TINY4)
    meta = {"model_config": json.dumps(TINY4), "fg_keep": "0.25"}
    save_file(vit.state_dict(), str(tmp_path / "e.safetensors"), metadata=meta)
    loaded = load_encoder(tmp_path / "e.safetensors")
    assert (
        loaded.record.fg_keep == 0.25
        and resolve_kept_tokens("auto", None, False, loaded.record.fg_keep, 0) is not None
    )
    save_file(vit.state_dict(), str(tmp_path / "f.safetensors"), metadata={"model_config": json.dumps(TINY4)})
    assert load_encoder(tmp_path / "f.safetensors").record.fg_keep is None
