"""Pretraining from a pack: part-guided runs, clear errors, and a 2-rank gloo run matching 1 rank."""

from __future__ import annotations

import pytest
import torch
from _helpers import run_torchrun

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.packed import pack_dataset
from semmae.data.part_cache import PartCache
from semmae.utils.run_logger import read_log


def _losses(out) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def packs(engine_images, tmp_path_factory):
    """The engine's 16 images packed at 40 px, with a 4x4 part cache (mae_vit_micro_patch8 at 32 px) and without."""
    tmp = tmp_path_factory.mktemp("packs")
    files = ImageFolderDataset(engine_images).relative_paths
    writer = PartCache.create(tmp / "parts.cache", files, grid=4, num_parts=3)
    g = torch.Generator().manual_seed(0)
    writer.write(0, torch.randint(0, 4, (16, 4, 4), generator=g), torch.rand(16, 4, 4, generator=g))
    writer.finalize()
    pack_dataset(
        engine_images, tmp / "parts.pack", 40, parts=tmp / "parts.cache", shard_size=5, progress=False
    )
    pack_dataset(engine_images, tmp / "plain.pack", 40, shard_size=16, progress=False)
    return tmp


@pytest.mark.parametrize("augment", ["crop-flip", "flip"])
def test_part_guided_pretraining_from_a_pack(packs, tmp_path, micro_args, augment):
    out = tmp_path / "r"
    argv = micro_args(
        packs / "parts.pack", out, "--masking", "adaptive", "--fg-keep", "0.5", "--augment", augment
    )
    assert main([*argv, "--epochs", "1", "--num-workers", "auto"]) == 0
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4] and all(torch.isfinite(torch.tensor(list(losses.values()))))
    waits = [r["data_wait"] for r in read_log(out / "log.jsonl") if "loss" in r]
    assert all(0.0 <= w <= 1.0 for w in waits)  # the share of each window spent waiting for batches


def test_packed_run_does_not_depend_on_workers(packs, tmp_path, micro_args):
    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / workers
        argv = micro_args(packs / "parts.pack", out, "--masking", "adaptive", "--epochs", "1")
        assert main([*argv, "--num-workers", workers]) == 0
        runs[workers] = _losses(out)
    assert runs["0"] == runs["2"]


def test_pack_errors_are_one_line(packs, tmp_path, micro_args, capsys):
    cases = [
        (["--masking", "adaptive"], packs / "plain.pack", "needs a part cache"),
        (["--parts", str(packs / "parts.cache")], packs / "parts.pack", "carries its own part cells"),
        (["--img-size", "48", "--masking", "adaptive"], packs / "parts.pack", "4x4 grid"),
        (["--num-workers", "lots"], packs / "plain.pack", "--num-workers"),
    ]
    for extra, data, message in cases:
        assert main(micro_args(data, tmp_path / "r", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.mark.slow
def test_two_gloo_ranks_on_a_pack_match_one_rank(packs, tmp_path, micro_args):
    common = ["--masking", "adaptive", "--epochs", "2", "--num-workers", "0", "--batch-size", "2"]
    data = packs / "parts.pack"
    one = tmp_path / "one"
    assert main(micro_args(data, one, *common, "--accum-iter", "2")) == 0
    two = tmp_path / "two"
    res = run_torchrun(micro_args(data, two, *common, "--device", "cpu"))
    assert res.returncode == 0, res.stderr[-3000:]
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == list(range(1, 9))
    for s in l1:
        assert l2[s] == pytest.approx(l1[s], rel=1e-4, abs=1e-5), s
