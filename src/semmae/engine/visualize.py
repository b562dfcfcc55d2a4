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
from semmae.models.patches import patchify, reconstruct_images, unpatchify
from semmae.utils.io import atomic_write_bytes


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


def full_grid_mask(mask: torch.Tensor, keep_index: torch.Tensor | None, num_patches: int) -> torch.Tensor:
    """bool ``[B, L]`` over the whole grid: masked patches and (patch-8 setting) patches that never entered."""
    if keep_index is None:
        return mask
    full = torch.ones(mask.shape[0], num_patches, dtype=torch.bool, device=mask.device)
    return full.scatter(1, keep_index, mask)


@torch.no_grad()
def reconstruction_panel(
    imgs: torch.Tensor,
    mask: torch.Tensor,
    pred: torch.Tensor,
    patch_size: int,
    norm_pix_loss: bool,
    keep_index: torch.Tensor | None = None,
    part_ids: torch.Tensor | None = None,
    no_part_id: int | None = None,
) -> np.ndarray:
    """Build the panel as ``uint8 [B * S, cols * S, 3]`` (one row per image).

    Args:
        imgs: ``[B, 3, S, S]`` normalised inputs. mask: bool ``[B, L']`` (True = masked) over the patches in the
            model. pred: ``[B, L', p*p*3]`` decoder output. patch_size: p.
        norm_pix_loss: whether ``pred`` is in per-patch normalised units.
        keep_index: long ``[B, L']`` patches that entered the model (patch-8 setting) or None (all ``L``).
        part_ids: long ``[B, L]`` over the full grid, or None (no part column).
    """
    imgs, mask, pred = imgs.float().cpu(), mask.cpu(), pred.float().cpu()
    keep_index = keep_index.cpu() if keep_index is not None else None
    b, _, h, w = imgs.shape
    grid = (h // patch_size, w // patch_size)
    target = patchify(imgs, patch_size)
    hidden = full_grid_mask(mask, keep_index, grid[0] * grid[1]).unsqueeze(-1).float()
    masked = unpatchify(target * (1 - hidden), patch_size, grid)  # 0 = the ImageNet mean colour
    recon = reconstruct_images(
        pred, imgs, mask, patch_size, keep_index=keep_index, norm_pix_loss=norm_pix_loss
    )
    cols = [_to_uint8(imgs), _to_uint8(masked), _to_uint8(recon)]
    if part_ids is not None:
        cols.append(_part_colours(part_ids, grid[0], h, no_part_id))
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(b)]
    return np.concatenate(rows, axis=0)


def save_panel(panel: np.ndarray, path: str | Path) -> None:
    """Write the panel as a PNG (atomically)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(panel).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
