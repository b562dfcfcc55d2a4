import json

import numpy as np
import pytest
from _helpers import write_image_folder
from PIL import Image

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.synth import PART_TYPES, make_synthetic_dataset, render_object_image


def test_synth_is_deterministic_and_masks_match(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_images=12, size=32, seed=3, progress=False)
    make_synthetic_dataset(tmp_path / "b", num_images=12, size=32, seed=3, progress=False)
    make_synthetic_dataset(tmp_path / "c", num_images=12, size=32, seed=4, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 24  # 12 images + 12 masks
    same = all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    differ = any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)
    assert same and differ
    assert a["splits"]["train"] + a["splits"]["val"] == 12
    train = ImageFolderDataset(tmp_path / "a" / "train")
    assert train.classes == a["classes"]
    for rel in train.relative_paths:
        mask = np.asarray(Image.open(tmp_path / "a" / "masks" / "train" / rel))
        assert mask.shape == (32, 32) and mask.max() <= len(PART_TYPES)
        assert 3 <= len(np.unique(mask)) - 1 <= 6  # 3-6 visible parts besides background
        assert (mask == 0).mean() > 0.2  # the object does not fill the image


def test_synth_cli_and_its_errors(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--num-images", "10", "--size", "32"]) == 0
    info = json.loads((tmp_path / "s" / "synth.json").read_text())
    assert info["num_part_types"] == 6
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--num-images", "10"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "--num-images", "3"]) == 2
    err = capsys.readouterr().err
    assert "at least 10" in err and len(err.strip().splitlines()) == 1


def test_check_lists_unreadable_files_and_accepts_odd_valid_ones(tmp_path, capsys):
    root = write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=2)
    Image.new("L", (5, 5)).save(root / "a" / "gray.png")
    Image.new("CMYK", (5, 5)).save(root / "a" / "cmyk.jpg")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(root / "b" / "deep.png")
    Image.new("RGBA", (3, 3)).save(root / "b" / "alpha.png")
    Image.new("RGB", (1, 1)).save(root / "b" / "one.png")
    Image.new("RGB", (100, 2)).save(root / "b" / "thin.png")
    Image.new("P", (4, 4)).save(root / "b" / "pal.png")
    assert main(["data", "check", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "11 images in 2 classes" in out and "all images readable" in out and "CMYK: 1" in out
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    assert main(["data", "check", "--data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "1 unreadable file(s)" in out and str(root / "b" / "broken.jpg") in out


def _body_hue_consistency(style: str, n: int = 40) -> float:
    """Resultant length (1 = always the same hue, ~0 = uniform) of the body's mean hue over ``n`` fish images."""
    angles = []
    for i in range(n):
        image, mask = render_object_image("fish", 48, np.random.default_rng(i), style)
        hue = np.asarray(Image.fromarray(image).convert("HSV"))[..., 0][mask == PART_TYPES.index("body") + 1]
        angles.append(np.angle(np.exp(2j * np.pi * hue / 256.0).mean()))
    return float(abs(np.exp(1j * np.array(angles)).mean()))


def test_random_style_takes_the_part_identity_out_of_the_colours(tmp_path):
    assert _body_hue_consistency("class") > 0.9  # one hue per (class, part type), up to a small jitter
    assert _body_hue_consistency("random") < 0.5  # a fresh hue in every image
    with pytest.raises(ValueError, match="style"):
        render_object_image("fish", 32, np.random.default_rng(0), "pastel")
    out = tmp_path / "r"
    argv = ["data", "synth", "--out", str(out), "--num-images", "10", "--size", "32", "--style", "random"]
    assert main(argv) == 0
    assert json.loads((out / "synth.json").read_text())["style"] == "random"
    again = tmp_path / "r2"
    assert main([*argv[:3], str(again), *argv[4:]]) == 0  # deterministic in this style too
    for f in out.rglob("*.png"):
        assert f.read_bytes() == (again / f.relative_to(out)).read_bytes()
