"""`semmae masks show` on tiny generated data: synthetic masks, a part cache, the fallback, user errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from semmae.cli import main
from semmae.data.part_cache import PartCache
from semmae.data.synth import make_synthetic_dataset
from semmae.masking.figure import load_examples


def test_show_with_synthetic_masks(tmp_path, capsys):
    make_synthetic_dataset(tmp_path / "syn", num_images=12, size=32, progress=False)
    out = tmp_path / "fig.png"
    argv = [
        "masks",
        "show",
        "--data",
        str(tmp_path / "syn" / "train"),
        "--out",
        str(out),
        "--img-size",
        "32",
        "--patch-size",
        "8",
        "--num-images",
        "2",
        "--alphas",
        "0",
        "1",
    ]
    assert main(argv) == 0
    assert Image.open(out).size[0] > 0 and "synthetic ground-truth masks" in capsys.readouterr().out
    # the part maps come from the masks folder: a background (0) and some parts
    _, part_ids, _, _ = load_examples(tmp_path / "syn" / "train", None, 2, 32, 8)
    assert part_ids.shape == (2, 4, 4) and part_ids.unique().numel() > 1


def test_show_with_part_cache_and_fallback(tiny_folder, tmp_path, capsys):
    from semmae.data.folder import ImageFolderDataset

    rel = ImageFolderDataset(tiny_folder).relative_paths
    writer = PartCache.create(tmp_path / "parts.cache", rel, grid=4, num_parts=3, producer={"test": True})
    ids = np.tile(np.array([[0, 1, 2, 3]], dtype=np.uint8), (len(rel), 4, 1))
    writer.write(0, ids, np.ones((len(rel), 4, 4), dtype=np.float32))
    writer.finalize()
    images, part_ids, source, no_part = load_examples(tiny_folder, str(tmp_path / "parts.cache"), 2, 32, 8)
    assert source == "part cache" and no_part == 3 and part_ids[0, 0].tolist() == [0, 1, 2, 3]
    assert (
        main(
            [
                "masks",
                "show",
                "--data",
                str(tiny_folder),
                "--cache",
                str(tmp_path / "parts.cache"),
                "--out",
                str(tmp_path / "c.png"),
                "--img-size",
                "32",
                "--patch-size",
                "8",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "masks",
                "show",
                "--data",
                str(tiny_folder),
                "--out",
                str(tmp_path / "f.png"),
                "--img-size",
                "32",
                "--patch-size",
                "8",
            ]
        )
        == 0
    )
    assert "quadrant fallback" in capsys.readouterr().out


def test_show_defaults_to_the_size_the_cache_was_exported_at(tiny_folder, tmp_path, capsys):
    """Issue 29: without --img-size the images are drawn at the part cache's size, not 224 px."""
    from semmae.data.folder import ImageFolderDataset

    rel = ImageFolderDataset(tiny_folder).relative_paths
    writer = PartCache.create(tmp_path / "p.cache", rel, grid=4, num_parts=3, producer={"img_size": 48})
    writer.write(0, np.zeros((len(rel), 4, 4), dtype=np.uint8), np.ones((len(rel), 4, 4), dtype=np.float32))
    writer.finalize()
    argv = ["masks", "show", "--data", str(tiny_folder), "--cache", str(tmp_path / "p.cache")]
    assert main([*argv, "--out", str(tmp_path / "m.png"), "--patch-size", "8", "--num-images", "1"]) == 0
    assert "at 48 px" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/nonexistent/folder"], "is not a folder"),
        (["--data", "x", "--alphas", "1.5"], "--alphas must lie"),
        (["--data", "x", "--img-size", "30"], "must be a multiple of --patch-size"),
        ([], "--data is required"),
    ],
)
def test_show_user_errors(extra, message, capsys):
    assert main(["masks", "show", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
