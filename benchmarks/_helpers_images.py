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


def write_splits(root: Path, train: int = 16, val: int = 8, size: int = 32, classes: int = 2) -> Path:
    """``root/train`` and ``root/val`` ImageFolders of :func:`write_images` (an Imagenette-like layout); the root."""
    write_images(root / "train", count=train, size=size, classes=classes, seed=0)
    write_images(root / "val", count=val, size=size, classes=classes, seed=1)
    return root


def write_fake_cub(root: Path, train: int = 16, test: int = 8, size: int = 48, keypoints: int = 3) -> Path:
    """A tiny fake of the CUB-200 part layout ``benchmarks/parts_cub.py`` reads: ``<class>/<image>.jpg``,
    ``images.csv`` (file, split, width, height, bbox_x, bbox_y, bbox_w, bbox_h) and ``keypoints.csv`` (file,
    part_id, x, y, visible, part_name), ``file`` relative to ``root``; the root."""
    import csv
    import shutil

    rng = np.random.default_rng(0)
    write_images(root / "tmp", count=train + test, size=size, classes=2, seed=2)
    images, points = [], []
    for k, src in enumerate(sorted((root / "tmp").rglob("*.jpg"))):
        file = f"{k % 2:03d}.Bird_{k % 2}/{src.stem}.jpg"
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        src.rename(root / file)
        x0, y0 = (int(v) for v in rng.integers(0, size // 4, 2))
        w, h = (int(v) for v in rng.integers(size // 2, size - size // 4, 2))
        split = "train" if k < train else "test"
        images.append(
            dict(file=file, split=split, width=size, height=size, bbox_x=x0, bbox_y=y0, bbox_w=w, bbox_h=h)
        )
        for pid in range(1, keypoints + 1):
            x, y = rng.uniform(x0, x0 + w), rng.uniform(y0, y0 + h)
            points.append(
                dict(file=file, part_id=pid, x=f"{x:.1f}", y=f"{y:.1f}", visible=1, part_name=f"kp{pid}")
            )
    shutil.rmtree(root / "tmp")
    for name, rows in (("images.csv", images), ("keypoints.csv", points)):
        with open(root / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root
