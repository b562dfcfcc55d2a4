"""The reconstruction panel written every ``--vis-every`` epochs: original / masked / reconstruction / part map.

Rows are images; columns are the (de-normalised) input, the input with masked patches greyed out, the MAE
reconstruction with the visible patches pasted back (as in MAE's Figure 2), and the part map when a cache is used.
With ``norm_pix_loss`` the model predicts per-patch normalised pixels, so predictions are mapped back with each
target patch's own mean and variance before display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from semmae.utils.io import atomic_write_bytes


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, L, p*p*C]`` in row-major patch order, pixels (p, p, C) within a patch."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, p: int, h: int, w: int, c: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, L, p*p*C] -> [B, C, H, W]``."""
    b = patches.shape[0]
    x = patches.reshape(b, h // p, w // p, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def _to_uint8(imgs: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (imgs.float().cpu() * std + mean).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _part_colours(part_ids: torch.Tensor, grid: int, size: int, no_part_id: int | None) -> np.ndarray:
    """``[B, L]`` ids -> ``[B, S, S, 3]`` colours (a fixed palette; "no part" cells black)."""
    rng = np.random.default_rng(0)
    n = int(part_ids.max().item()) + 1
    palette = rng.integers(40, 256, size=(n, 3), dtype=np.uint8)
    if no_part_id is not None and no_part_id < n:
        palette[no_part_id] = 0
    cells = palette[part_ids.cpu().numpy().reshape(-1, grid, grid)]
    rep = size // grid
    return cells.repeat(rep, axis=1).repeat(rep, axis=2)


@torch.no_grad()
def reconstruction_panel(
    imgs: torch.Tensor,
    mask: torch.Tensor,
    pred: torch.Tensor,
    patch_size: int,
    norm_pix_loss: bool,
    part_ids: torch.Tensor | None = None,
    no_part_id: int | None = None,
) -> np.ndarray:
    """Build the panel as ``uint8 [rows * S, cols * S, 3]``.

    Args:
        imgs: ``[B, 3, S, S]`` normalised inputs. mask: bool ``[B, L]`` (True = masked) over the full grid.
        pred: ``[B, L, p*p*3]`` decoder output over the full grid. patch_size: p.
        norm_pix_loss: whether ``pred`` is in per-patch normalised units. part_ids: long ``[B, L]`` or None.
    """
    imgs, mask, pred = imgs.float().cpu(), mask.cpu(), pred.float().cpu()
    b, _, h, w = imgs.shape
    target = patchify(imgs, patch_size)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    m = mask.unsqueeze(-1).float()
    grey = torch.zeros_like(target)  # 0 in normalised units = the ImageNet mean colour
    masked = unpatchify(target * (1 - m) + grey * m, patch_size, h, w)
    recon = unpatchify(target * (1 - m) + pred * m, patch_size, h, w)
    cols = [_to_uint8(imgs), _to_uint8(masked), _to_uint8(recon)]
    if part_ids is not None:
        cols.append(_part_colours(part_ids, h // patch_size, h, no_part_id))
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(b)]
    return np.concatenate(rows, axis=0)


def save_panel(panel: np.ndarray, path: str | Path) -> None:
    """Write the panel as a PNG (atomically)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(panel).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
