"""Tiny generated segmentation datasets (ADE20K release layout, generic pairs) and a tiny encoder config."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

# random-init tiny encoder flags for the CLI: 32 px crops, patch 8, width 32, depth 2
TINY_ENCODER = [
    "--random-init",
    "--arch",
    "vit_tiny_patch8",
    "--embed-dim",
    "32",
    "--depth",
    "2",
    "--num-heads",
    "2",
    "--crop-size",
    "32",
    "--scale-base",
    "32",
    "--head-channels",
    "16",
    "--aux-channels",
    "8",
    "--pool-scales",
    "1",
    "2",
    "--device",
    "cpu",
    "--num-workers",
    "0",
]


def segment_train_argv(data, out, iters: int, ckpt_every: int, num_vis: int) -> list[str]:
    """``semmae segment train`` on a tiny tree with the tiny encoder: batch 2, a log record every iteration."""
    return [
        "segment",
        "train",
        "--data",
        str(data),
        *TINY_ENCODER,
        "--iters",
        str(iters),
        "--batch-size",
        "2",
        "--ckpt-every",
        str(ckpt_every),
        "--eval-every",
        "0",
        "--log-every",
        "1",
        "--warmup-iters",
        "1",
        "--out",
        str(out),
        "--num-vis",
        str(num_vis),
        "--eval-stride",
        "21",
        "--eval-short-side",
        "0",
    ]


def write_pairs(
    root,
    split_names=("training", "validation"),
    n=(4, 2),
    size=(40, 48),
    num_labels=151,
    seed=0,
    image_ext="jpg",
):
    """Write ``root/images/<split>/*.<ext>`` and ``root/annotations/<split>/*.png`` (labels in [0, num_labels))."""
    rng = np.random.default_rng(seed)
    for split, count in zip(split_names, n):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = size
            label = np.zeros((h, w), dtype=np.uint8)
            # blocky labels so the image content predicts them
            label[: h // 2, : w // 2] = rng.integers(0, num_labels)
            label[h // 2 :, w // 2 :] = rng.integers(0, num_labels)
            image = np.stack([label * 1.5 % 255, 255 - label, rng.integers(0, 255, (h, w))], -1).astype(
                np.uint8
            )
            name = f"ADE_{split}_{i:08d}"
            Image.fromarray(image).save(root / "images" / split / f"{name}.{image_ext}")
            Image.fromarray(label, mode="L").save(root / "annotations" / split / f"{name}.png")
    return root


@pytest.fixture
def fake_ade(tmp_path):
    """A tiny ADE20K release: ``ADEChallengeData2016/`` with objectInfo150.txt, jpg images and 0..150 labels."""
    root = tmp_path / "ade" / "ADEChallengeData2016"
    write_pairs(root)
    lines = ["Idx\tRatio\tTrain\tVal\tName"] + [
        f"{i}\t0.01\t10\t1\tthing{i}, other{i}" for i in range(1, 151)
    ]
    (root / "objectInfo150.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "ade"
