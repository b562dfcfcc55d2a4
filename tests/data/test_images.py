import io

import numpy as np
import pytest
from PIL import Image

from semmae.data.images import load_rgb
from semmae.errors import BadImageError


def test_grayscale_palette_cmyk_become_rgb(tmp_path):
    gray = Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L")
    gray.save(tmp_path / "g.png")
    gray.convert("P").save(tmp_path / "p.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    for name in ("g.png", "p.png", "c.jpg"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB"
    assert np.asarray(load_rgb(tmp_path / "g.png"))[0, 0].tolist() == [100, 100, 100]
    r, g, b = np.asarray(load_rgb(tmp_path / "c.jpg"))[1, 1].tolist()
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red


def test_16bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = np.asarray(load_rgb(tmp_path / "d.png"))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_alpha_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[1, 1] = (0, 0, 0, 0)  # transparent black -> white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_exif_rotation_is_honoured(tmp_path):
    img = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (2, 6)


def test_tiny_image_is_valid(tmp_path):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "t.png")
    assert load_rgb(tmp_path / "t.png").size == (1, 1)


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_corrupt_file_names_the_file(tmp_path, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(BadImageError, match="bad.jpg"):
        load_rgb(bad)


def test_truncated_jpeg_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(BadImageError, match="trunc.jpg"):
        load_rgb(tmp_path / "trunc.jpg")
