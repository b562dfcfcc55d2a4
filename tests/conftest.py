"""Shared fixtures: tiny generated images only (tests never read ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def write_image_folder(root, classes=("a", "b"), per_class=3, size=32, seed=0, ext="png"):
    """Write a tiny ImageFolder tree of random RGB images; returns the root."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"img{i}.{ext}")
    return root


@pytest.fixture
def tiny_folder(tmp_path):
    return write_image_folder(tmp_path / "imgs")
