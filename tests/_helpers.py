"""Helpers shared by tests (importable as ``_helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_image_folder(root, classes=("a", "b"), per_class=3, size=32, seed=0, ext="png"):
    """Write a tiny ImageFolder tree of random RGB images; returns the root."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"img{i}.{ext}")
    return root
