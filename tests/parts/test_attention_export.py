"""``semmae parts export --source attention``: paper Table 4's raw-attention parts from an encoder checkpoint, checked
against the attention computed directly (full softmax attention of the last block, per image), written in the
cache format the reproduction harness has always read, and one-line errors for wrong combinations."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from semmae.cli import main, run_stage, stage_config
from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCache
from semmae.parts.inference import full_image_transform

from .conftest import HEADS, IMG, PATCH, tiny_vit


def expected_attention_maps(data, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(part ids long [N, grid, grid], foreground [N, grid, grid]) of every image of ``data``, one image at a time:
    the last block's full attention matrix, the class token's row over the patches per head, bilinear to the grid;
    ids = argmax over heads, foreground = mean over heads, min-max normalised per image."""
    vit = tiny_vit().eval()  # the weights of the conftest's encoder checkpoint
    dataset = ImageFolderDataset(data, transform=full_image_transform(IMG))
    g = IMG // PATCH
    ids, fgs = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            x = vit._pos_embed(vit.patch_embed(dataset[i]["image"][None]))
            for blk in vit.blocks[:-1]:
                x = blk(x)
            last = vit.blocks[-1]
            h = last.norm1(x)[0]  # [T, D]
            heads = []
            for head in range(HEADS):
                d = vit.embed_dim // HEADS
                w_q, w_k = (last.attn.qkv.weight[j * vit.embed_dim + head * d :][:d] for j in (0, 1))
                b_q, b_k = (last.attn.qkv.bias[j * vit.embed_dim + head * d :][:d] for j in (0, 1))
                q, k = h @ w_q.T + b_q, h @ w_k.T + b_k  # [T, d]
                attn = torch.softmax(q @ k.T / d**0.5, dim=-1)  # [T, T]
                heads.append(attn[0, 1:].reshape(g, g))
            maps = torch.stack(heads)[None]  # [1, H, g, g]
            if grid != g:
                maps = F.interpolate(maps, size=(grid, grid), mode="bilinear", align_corners=False)
            ids.append(maps[0].argmax(0))
            fg = maps[0].mean(0)
            fgs.append((fg - fg.min()) / (fg.max() - fg.min()))
    return torch.stack(ids), torch.stack(fgs)


@pytest.mark.parametrize("grid", [IMG // PATCH, 2 * IMG // PATCH])
def test_attention_cache_equals_the_direct_formula(tmp_path, synth, encoder_ckpt, grid):
    out = tmp_path / f"attention_grid{grid}.cache"
    argv = ["parts", "export", "--source", "attention", "--data", str(synth / "val")]
    argv += ["--encoder-checkpoint", str(encoder_ckpt), "--img-size", str(IMG), "--grid", str(grid)]
    assert main([*argv, "--out", str(out), "--num-workers", "0", "--batch-size", "3", "--device", "cpu"]) == 0
    cache = PartCache.open(out, ImageFolderDataset(synth / "val").relative_paths)
    assert cache.grid == grid and cache.num_parts == HEADS  # one "part" per head, as the harness always wrote
    assert cache.meta["producer"]["command"] == "semmae parts export --source attention"
    ids, fg = expected_attention_maps(synth / "val", grid)
    assert len(cache) == len(ids)
    step = 1.0 / (2 ** cache.meta["fg_bits"] - 1)  # the cache stores the foreground quantised
    for i in range(len(cache)):
        got_ids, got_fg = cache[i]
        assert torch.equal(got_ids.long(), ids[i]), i
        torch.testing.assert_close(got_fg, fg[i], atol=step, rtol=0)


def test_attention_export_from_a_typed_config_matches_the_cli(tmp_path, synth, encoder_ckpt):
    """The road pipelines take (stage_config + dataclasses.replace + run_stage) writes the same cache."""
    cfg = stage_config(
        "parts export",
        source="attention",
        data=str(synth / "val"),
        encoder_checkpoint=str(encoder_ckpt),
        img_size=IMG,
        out=str(tmp_path / "a.cache"),
        num_workers=0,
        device="cpu",
    )
    run_stage("parts export", cfg)
    run_stage("parts export", dataclasses.replace(cfg, out=str(tmp_path / "b.cache"), batch_size=2))
    a, b = PartCache.open(tmp_path / "a.cache"), PartCache.open(tmp_path / "b.cache")
    for i in range(len(a)):
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i]))
    with pytest.raises(TypeError, match="PartsExportConfig"):
        run_stage("parts train", cfg)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--source", "attention"], "--source attention needs --encoder-checkpoint"),
        (["--source", "attention", "--encoder-checkpoint", "e.pth", "--checkpoint", "p.pth"], "--checkpoint"),
        (["--checkpoint", "p.pth", "--encoder-checkpoint", "e.pth"], "are for --source attention"),
        (["--source", "attention", "--encoder-checkpoint", "/no/enc.pth"], "/no/enc.pth"),
        (["--source", "learned"], "--checkpoint is required"),
    ],
)
def test_wrong_source_combinations_are_one_line_errors(tmp_path, synth, extra, needle, capsys):
    argv = ["parts", "export", "--data", str(synth / "val"), "--out", str(tmp_path / "c"), *extra]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_export_workers_follow_the_machine_by_default(tmp_path, synth, encoder_ckpt, monkeypatch):
    """Issue 29: `parts export` without --num-workers takes what the cores leave ('auto', as pretrain does), so
    torch's "will create 4 worker processes ... suggested max 2" warning is not printed on a 2-core machine."""
    import warnings

    from semmae.data.workers import auto_worker_plan
    from semmae.parts.config import PartsEvalConfig, PartsExportConfig, PartsTrainConfig

    assert (
        PartsExportConfig().num_workers
        == PartsTrainConfig().num_workers
        == PartsEvalConfig().num_workers
        == "auto"
    )
    seen = []
    monkeypatch.setattr("semmae.parts.export.DataLoader.__init__", _record_workers(seen))
    argv = ["parts", "export", "--source", "attention", "--data", str(synth / "val"), "--device", "cpu"]
    argv += ["--encoder-checkpoint", str(encoder_ckpt), "--img-size", str(IMG), "--out", str(tmp_path / "c")]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*worker process")  # torch's worker-count warning
        assert main(argv) == 0
    assert seen == [auto_worker_plan(False, "cpu").count]


def _record_workers(seen: list):
    from semmae.data.loader import DataLoader

    original = DataLoader.__init__

    def init(self, *args, **kw):
        seen.append(kw.get("num_workers", 0))
        original(self, *args, **kw)

    return init
