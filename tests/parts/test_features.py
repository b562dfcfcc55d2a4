"""Tokens computed once per image and view (--features cached) and the training run built on them."""

from __future__ import annotations

import json

import pytest
import torch

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.transforms import normalize_batch
from semmae.errors import UserError
from semmae.parts.encoder import FrozenEncoder
from semmae.parts.features import FeatureCache, feature_cache_bytes, uint8_image_transform
from semmae.parts.inference import full_image_transform
from semmae.utils.run_logger import read_log

from .conftest import IMG, tiny_vit, train_args


@pytest.fixture(scope="module")
def encoder():
    return FrozenEncoder(tiny_vit())


def test_the_feature_cache_encodes_under_the_runs_autocast(encoder, synth, monkeypatch):
    from semmae.engine.precision import resolve_precision

    seen = []
    call = FrozenEncoder.forward

    def recording(self, images):
        seen.append(torch.is_autocast_enabled("cpu"))
        return call(self, images)

    monkeypatch.setattr(FrozenEncoder, "forward", recording)
    ds = ImageFolderDataset(synth / "train", transform=uint8_image_transform(IMG))
    bf16 = resolve_precision("bf16", torch.device("cpu"))
    FeatureCache.build(encoder, ds, 8, 0, torch.device("cpu"), 2**30, progress=False, precision=bf16)
    assert seen and all(seen)


def test_cached_tokens_are_the_encoders_for_both_views(encoder, synth):
    ds = ImageFolderDataset(synth / "train", transform=uint8_image_transform(IMG))
    cache = FeatureCache.build(encoder, ds, 3, 0, torch.device("cpu"), 2**30, progress=False)
    n, g = len(ds), encoder.grid_size
    assert cache.images.dtype == torch.uint8 and cache.images.shape == (n, 3, IMG, IMG)
    assert cache.patches.shape == (2, n, g * g, encoder.embed_dim)
    idx, flip = torch.tensor([0, 1, 2]), torch.tensor([False, True, False])
    images, f_c, f = cache.batch(idx, flip, torch.device("cpu"))
    # the pixels are the whole-image view of inference (up to uint8 rounding), flipped where asked
    ref = torch.stack(
        [
            ImageFolderDataset(synth / "train", transform=full_image_transform(IMG))[i]["image"]
            for i in range(3)
        ]
    )
    ref[1] = ref[1].flip(-1)
    torch.testing.assert_close(images, ref, atol=0.05, rtol=0)
    feats = encoder(images)
    torch.testing.assert_close(f, feats["patches"], atol=2e-2, rtol=1e-2)  # stored in half precision
    torch.testing.assert_close(f_c, feats["cls"], atol=2e-2, rtol=1e-2)


def test_cache_refuses_to_outgrow_its_limit(encoder, synth):
    ds = ImageFolderDataset(synth / "train", transform=uint8_image_transform(IMG))
    need = feature_cache_bytes(len(ds), IMG, encoder.grid_size**2, encoder.embed_dim)
    with pytest.raises(UserError, match="--features online"):
        FeatureCache.build(encoder, ds, 3, 0, torch.device("cpu"), need - 1, progress=False)


def test_cached_pixels_are_normalised_as_the_per_image_transform_to_the_bit():
    """The feature cache keeps uint8 pixels and normalises them with the one normaliser (data.transforms), which
    gives the values of ``--features online``'s per-image ToDtype + Normalize exactly."""
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    from torchvision.transforms import v2

    ref = v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(v2.ToDtype(torch.float32, scale=True)(x))
    assert torch.equal(normalize_batch(x), ref)
    assert not torch.equal(normalize_batch(x.flip(-1)), ref)


def test_cached_run_logs_diagnostics_prints_verdict_and_resumes_exactly(
    tmp_path, synth, encoder_ckpt, capsys
):
    common = ("--features", "cached", "--similarity", "cosine", "--softmax-over", "parts", "--log-every", "1")
    straight = tmp_path / "straight"
    assert main(train_args(synth / "train", straight, encoder_ckpt, *common, "--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "parts used per image" in out and "of 6" in out
    log = read_log(straight / "log.jsonl")
    step_rec = next(r for r in log if "rec" in r and "epoch_loss" not in r)
    assert 1 <= step_rec["parts_used"] <= 6 and "share_5" in step_rec and "max_prob" in step_rec
    epoch_rec = [r for r in log if "epoch_parts_used" in r]
    assert len(epoch_rec) == 2
    ckpt = torch.load(straight / "checkpoint.pth", weights_only=True)
    assert ckpt["diagnostics"]["parts_used"] == pytest.approx(epoch_rec[-1]["epoch_parts_used"])

    resumed = tmp_path / "resumed"
    assert main(train_args(synth / "train", resumed, encoder_ckpt, *common, "--epochs", "1")) == 0
    assert main(train_args(synth / "train", resumed, encoder_ckpt, *common, "--epochs", "2")) == 0
    a = torch.load(straight / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pth", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    losses = [
        [r["loss"] for r in read_log(d / "log.jsonl") if "rec" in r and "epoch_loss" not in r]
        for d in (straight, resumed)
    ]
    assert losses[0] == losses[1]
    assert json.loads(json.dumps(ckpt["config"]))["features"] == "cached"


def test_cached_batches_shard_ranks_disjointly_and_reshuffle_each_epoch():
    from semmae.parts.train import CachedBatches

    n, dim = 20, 4
    # each image carries its index in its class token, so a batch tells which images it holds
    cache = FeatureCache(
        images=torch.zeros(n, 3, 2, 2, dtype=torch.uint8),
        cls=torch.arange(n, dtype=torch.float16).view(1, n, 1).expand(2, n, dim).contiguous(),
        patches=torch.zeros(2, n, 1, dim, dtype=torch.float16),
    )

    def seen(rank, epoch):
        batches = CachedBatches(cache, 3, rank, 2, seed=7, device=torch.device("cpu"))
        assert batches.steps_per_epoch == 3  # 10 images per rank, batches of 3, the last partial one dropped
        return [int(i) for _, f_c, _ in batches.epoch(epoch) for i in f_c[:, 0]]

    r0, r1 = seen(0, 0), seen(1, 0)
    assert len(r0) == len(r1) == 9 and not set(r0) & set(r1)
    assert seen(0, 0) == r0  # seeded: a resumed epoch replays the same batches
    assert seen(0, 1) != r0


def test_cli_refuses_a_token_cache_over_its_limit_in_one_line(tmp_path, synth, encoder_ckpt, capsys):
    out = tmp_path / "run"
    args = train_args(
        synth / "train", out, encoder_ckpt, "--features", "cached", "--feature-cache-gb", "1e-6"
    )
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--feature-cache-gb" in err and "--features online" in err
    assert not (out / "checkpoint.pth").exists()
