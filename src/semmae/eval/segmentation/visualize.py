"""A PNG of predictions next to the ground truth: one row per image (image | ground truth | prediction)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semmae.utils.io import atomic_write_bytes

IGNORE_COLOR = (0, 0, 0)


def palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """Distinct-looking uint8 colours ``[K, 3]`` (fixed seed, so a class keeps its colour across runs)."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)


def colorize(label: torch.Tensor, num_classes: int, ignore_index: int) -> np.ndarray:
    """Class map ``[H, W]`` -> RGB uint8 ``[H, W, 3]``; ignored pixels are black."""
    lab = label.cpu().numpy().astype(np.int64)
    colors = np.concatenate([palette(num_classes), np.array([IGNORE_COLOR], dtype=np.uint8)])
    return colors[np.where((lab >= 0) & (lab < num_classes), lab, num_classes)]


def save_comparison(
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, gap: int = 4
) -> None:
    """Write ``rows`` of (image, ground truth, prediction) RGB uint8 ``[H, W, 3]`` arrays as one PNG."""
    if not rows:
        return
    heights = [r[0].shape[0] for r in rows]
    width = max(sum(a.shape[1] for a in r) + gap * (len(r) - 1) for r in rows)
    canvas = np.full((sum(heights) + gap * (len(rows) - 1), width, 3), 255, dtype=np.uint8)
    y = 0
    for r in rows:
        x = 0
        for a in r:
            canvas[y : y + a.shape[0], x : x + a.shape[1]] = a
            x += a.shape[1] + gap
        y += r[0].shape[0] + gap

    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
