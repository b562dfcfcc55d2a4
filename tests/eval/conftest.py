"""Fixtures for evaluation tests: a tiny separable image dataset and a tiny encoder checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def write_split(root, per_class: int, seed: int, size: int = 32):
    """Two classes that differ in colour (red-ish vs blue-ish), with noise: learnable from any encoder."""
    rng = np.random.default_rng(seed)
    for c, channel in (("blue", 2), ("red", 0)):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            arr[..., channel] = rng.integers(160, 255, size=(size, size), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinydata")
    write_split(root / "train", per_class=8, seed=0)
    write_split(root / "val", per_class=4, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny encoder saved in this project's pretrain layout (model + model_config)."""
    torch.manual_seed(0)
    m = VisionTransformer(num_classes=0, **TINY)
    path = tmp_path_factory.mktemp("ckpt") / "pretrain.pth"
    torch.save({"model": m.state_dict(), "model_config": dict(TINY), "epoch": 0}, path)
    return path
