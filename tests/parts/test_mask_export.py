"""``semmae parts export --source masks``: the oracle part cache from ground-truth label PNGs - every cell's
majority label (background = part 0) and its non-background share, checked cell by cell against a direct count,
usable by pretraining like any cache, and one-line errors for wrong combinations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCache
from semmae.parts.export import MASK_CELL_PIXELS, mask_cells

from .conftest import IMG


def direct_cells(mask: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """The slow formula: per cell, count every label with a Python loop; ties go to the smallest label."""
    r = mask.shape[0] // grid
    ids = np.zeros((grid, grid), np.int64)
    fg = np.zeros((grid, grid), np.float32)
    for i in range(grid):
        for j in range(grid):
            cell = mask[i * r : (i + 1) * r, j * r : (j + 1) * r].ravel().tolist()
            counts = {lab: cell.count(lab) for lab in set(cell)}
            ids[i, j] = min(counts, key=lambda lab: (-counts[lab], lab))
            fg[i, j] = sum(v > 0 for v in cell) / len(cell)
    return ids, fg


def test_mask_cells_equal_the_direct_count():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, size=(3, 12, 12)).astype(np.uint8)
    ids, fg = mask_cells(masks, 4, 4)
    for m, i, f in zip(masks, ids, fg):
        want_ids, want_fg = direct_cells(m, 4)
        np.testing.assert_array_equal(i, want_ids)
        np.testing.assert_allclose(f, want_fg)


@pytest.mark.parametrize("grid", [IMG // 8, IMG // 4])
def test_mask_cache_holds_the_ground_truth(tmp_path, synth, grid):
    out = tmp_path / "gt.cache"
    argv = ["parts", "export", "--source", "masks", "--data", str(synth / "train")]
    argv += ["--masks", str(synth / "masks" / "train"), "--grid", str(grid), "--out", str(out)]
    assert main([*argv, "--batch-size", "5"]) == 0
    rel = ImageFolderDataset(synth / "train").relative_paths
    cache = PartCache.open(out, rel, root=synth / "train")
    assert cache.grid == grid and cache.meta["producer"]["command"].endswith("--source masks")
    levels = 2 ** cache.meta["fg_bits"] - 1
    size = grid * MASK_CELL_PIXELS
    for i, rp in enumerate(rel):
        with Image.open((synth / "masks" / "train" / rp).with_suffix(".png")) as im:
            mask = np.asarray(im.resize((size, size), Image.NEAREST))
        want_ids, want_fg = direct_cells(mask, grid)
        ids, fg = cache[i]
        np.testing.assert_array_equal(ids.numpy(), want_ids)
        np.testing.assert_allclose(fg.numpy(), np.round(want_fg * levels) / levels, atol=1e-6)
    # the synthetic objects have parts: the oracle cache uses more than background + one label
    assert len(np.unique(np.stack([cache[i][0].numpy() for i in range(len(rel))]))) >= 3


def test_pretraining_reads_the_mask_cache(tmp_path, synth):
    cache = tmp_path / "gt.cache"
    argv = ["parts", "export", "--source", "masks", "--data", str(synth / "train")]
    assert main([*argv, "--masks", str(synth / "masks" / "train"), "--grid", "4", "--out", str(cache)]) == 0
    run = tmp_path / "run"
    argv = ["pretrain", "--data", str(synth / "train"), "--out", str(run), "--model", "mae_vit_micro_patch8"]
    argv += ["--img-size", str(IMG), "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4"]
    argv += ["--masking", "adaptive", "--decoder-depth", "1", "--depth", "1"]
    argv += ["--parts", str(cache), "--num-workers", "0", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    assert any(run.glob("checkpoint*"))


@pytest.mark.parametrize(
    "extra, needle",
    [
        ([], "--masks"),
        (["--masks", "M", "--checkpoint", "x.pth"], "reads only --masks"),
        (["--masks", "M", "--grid", "0"], "--grid"),
    ],
)
def test_mask_source_errors_are_one_line(tmp_path, synth, capsys, extra, needle):
    extra = [str(synth / "masks" / "train") if a == "M" else a for a in extra]
    grid = [] if "--grid" in extra else ["--grid", "4"]
    argv = [
        "parts",
        "export",
        "--source",
        "masks",
        "--data",
        str(synth / "train"),
        "--out",
        str(tmp_path / "c"),
    ]
    assert main([*argv, *grid, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_masks_flag_needs_the_masks_source(tmp_path, synth, capsys):
    argv = [
        "parts",
        "export",
        "--data",
        str(synth / "train"),
        "--checkpoint",
        "x.pth",
        "--out",
        str(tmp_path / "c"),
    ]
    assert main([*argv, "--masks", str(synth / "masks" / "train")]) == 2
    assert "--source masks" in capsys.readouterr().err
