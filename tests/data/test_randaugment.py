"""timm's RandAugment posterize at 0 bits: Pillow 13 raises; the patched op gives the black image Pillow 12 gave."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform

from semmae.data.randaugment import patch_posterize, posterize_keep_bits


def _image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_posterize_keep_bits_matches_the_bit_mask():
    img = _image()
    a = np.asarray(img)
    for bits in range(1, 8):
        got = np.asarray(posterize_keep_bits(img, bits))
        np.testing.assert_array_equal(got, a & (0xFF << (8 - bits) & 0xFF))
    assert posterize_keep_bits(img, 8) is img
    assert not np.asarray(posterize_keep_bits(img, 0)).any()
    assert posterize_keep_bits(img, 0).size == img.size and posterize_keep_bits(img, 0).mode == "RGB"


def test_max_magnitude_posterize_runs_after_patching():
    ra = rand_augment_transform("rand-m10-n1-inc1", {})
    (op,) = [o for o in ra.ops if o.name == "PosterizeIncreasing"]
    op.prob = 1.0
    ra.ops, ra.num_layers, ra.choice_weights = [op], 1, None
    img = _image()
    try:  # Pillow >= 13 refuses 0 bits; older Pillow returned black: either way the patch must give black
        op(img)
    except ValueError as e:
        assert "bits" in str(e)
    patch_posterize(ra)
    assert not np.asarray(ra(img)).any()


@pytest.mark.parametrize("aa", ["rand-m9-mstd0.5-inc1", "original"])
def test_patch_finds_the_ops_inside_create_transform(aa):
    t = patch_posterize(create_transform(32, is_training=True, auto_augment=aa))
    fns = [
        op.aug_fn
        for s in t.transforms
        for op in [*getattr(s, "ops", []), *(o for sub in getattr(s, "policy", []) for o in sub)]
        if op.name.startswith("Posterize")
    ]
    assert fns and all(f is posterize_keep_bits for f in fns)
