"""Generated image folders for benchmarks that must run anywhere (no dataset on the box)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def write_images(root: Path, count: int = 64, size: int = 256, classes: int = 2, seed: int = 0) -> Path:
    """``count`` JPEGs (smooth shapes on a gradient, quality 90) in ``classes`` ImageFolder classes; the root."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.linspace(0, 255, size, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, (1, 1, 3))
        img = Image.fromarray(np.broadcast_to(base, (size, size, 3)).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, size, 2)
            r = int(rng.integers(size // 10, size // 3))
            draw.ellipse(
                (x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
            )
        img.filter(ImageFilter.GaussianBlur(1)).save(d / f"{i:05d}.jpg", quality=90)
    return root
