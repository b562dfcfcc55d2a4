"""Drawing part maps: a fixed colour per part id, overlays blended on the image, and PNG grids of panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from semmae.utils.io import atomic_write_bytes


def palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (uint8 [n, 3]) from matplotlib's tab20."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if n > 10 else colormaps["tab10"]
    return (np.array([cmap(i % cmap.N)[:3] for i in range(n)]) * 255).astype(np.uint8)


def denormalize(images: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised [B, 3, S, S] -> uint8 [B, S, S, 3]."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=images.device).view(1, 3, 1, 1)
    x = (images.float() * std + mean).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def overlay(
    images_u8: np.ndarray, part_ids: torch.Tensor, num_colors: int, alpha: float = 0.55
) -> np.ndarray:
    """Blend part colours over images: uint8 [B, S, S, 3] + long [B, g, g] -> uint8 [B, S, S, 3]."""
    s = images_u8.shape[1]
    ids = F.interpolate(part_ids[:, None].float(), size=(s, s), mode="nearest")[:, 0].long().cpu().numpy()
    colors = palette(num_colors)[np.clip(ids, 0, num_colors - 1)]
    return (images_u8 * (1 - alpha) + colors * alpha).round().astype(np.uint8)


def grid_image(columns: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Columns of uint8 [B, S, S, 3] -> one uint8 [B*(S+pad), C*(S+pad), 3] image (row = image, column = view)."""
    b, s = columns[0].shape[:2]
    out = np.full((b * (s + pad) + pad, len(columns) * (s + pad) + pad, 3), 255, np.uint8)
    for j, col in enumerate(columns):
        for i in range(b):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            out[y : y + s, x : x + s] = col[i]
    return out


def save_png(array: np.ndarray, path: str | Path, verb: str = "parts show") -> None:
    """Write uint8 [H, W, 3] as a PNG atomically, signed as ``semmae <verb>``'s figure."""
    import io

    from semmae.utils.content_seal import sealed_png
    from semmae.utils.ownership import png_info

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", pnginfo=png_info(verb))
    atomic_write_bytes(path, sealed_png(buf.getvalue()))
