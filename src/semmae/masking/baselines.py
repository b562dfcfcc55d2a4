"""Baseline masks of paper Table 3 / Figure 1: random (MAE), block-wise (BEiT), attention-guided (AttMask).

Each returns a bool ``[B, L]`` mask (True = masked) with exactly ``round(ratio * L)`` masked patches per image,
so every strategy feeds the same MAE code path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from semmae.masking.semantic import _check_ratio, num_masked

__all__ = ["random_mask", "block_mask", "attention_mask"]


def _mask_from_order(order: Tensor, n_mask: int) -> Tensor:
    """Mask the first ``n_mask`` patches of each row's ``order`` ``[B, L]``."""
    mask = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    return mask.scatter_(1, order[:, :n_mask], True)


def random_mask(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    noise: Tensor | None = None,
) -> Tensor:
    """MAE's random masking: per-image shuffle by ``argsort`` of uniform noise; the last patches are masked.
    ``noise``: float ``[B, L]`` drawn beforehand instead of ``generator`` (the same draw gives the same mask).

    Returns:
        bool ``[batch_size, num_patches]``, True = masked, ``round(mask_ratio * num_patches)`` per row.
    """
    _check_ratio(mask_ratio)
    n_mask = num_masked(num_patches, mask_ratio)
    if noise is None:
        noise = torch.rand(batch_size, num_patches, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept, large is masked
    return _mask_from_order(ids_shuffle.flip(1), n_mask)


def block_mask(
    batch_size: int,
    grid_hw: tuple[int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    min_block_patches: int = 16,
    min_aspect: float = 0.3,
) -> Tensor:
    """BEiT-style block-wise masking, batched.

    Rectangles with area uniform in ``[min_block_patches, n_mask]`` and log-uniform aspect ratio in
    ``[min_aspect, 1 / min_aspect]`` are dropped one after another; a patch's key is the index of the first
    rectangle that covers it plus uniform noise, and the ``n_mask`` lowest keys are masked. This is "add blocks
    until the budget is reached, the last one partly", and patches no block covers fill any remainder at random.

    Returns:
        bool ``[batch_size, h * w]`` (row-major over the grid), True = masked, ``round(mask_ratio * h * w)`` per row.
    """
    _check_ratio(mask_ratio)
    if not (isinstance(grid_hw, (tuple, list)) and len(grid_hw) == 2):
        raise ValueError(f"block masking needs the patch grid (h, w), got {grid_hw!r}")
    h, w = (int(v) for v in grid_hw)
    if not 0.0 < min_aspect <= 1.0:
        raise ValueError(f"min_aspect must lie in (0, 1], got {min_aspect!r}")
    n_mask = num_masked(h * w, mask_ratio)
    min_area = float(max(1, min(min_block_patches, n_mask)))
    num_blocks = min(64, 2 * math.ceil(n_mask / min_area) + 4)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, device=device, generator=generator)

    area = min_area + rand(batch_size, num_blocks) * (max(n_mask, min_area) - min_area)
    aspect = torch.exp((2 * rand(batch_size, num_blocks) - 1) * math.log(1.0 / min_aspect))
    bh = torch.sqrt(area * aspect).round().clamp(1, h)
    bw = torch.sqrt(area / aspect).round().clamp(1, w)
    top = (rand(batch_size, num_blocks) * (h - bh + 1)).floor()
    left = (rand(batch_size, num_blocks) * (w - bw + 1)).floor()
    rows = torch.arange(h, device=device).view(1, 1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, 1, w)
    in_rows = (rows >= top[..., None, None]) & (rows < (top + bh)[..., None, None])
    in_cols = (cols >= left[..., None, None]) & (cols < (left + bw)[..., None, None])
    block_index = torch.arange(num_blocks, device=device, dtype=torch.float32).view(1, -1, 1, 1)
    first = torch.where(in_rows & in_cols, block_index, float(num_blocks)).amin(1).flatten(1)  # [B, L]
    order = torch.argsort(first + rand(batch_size, h * w), dim=1)
    return _mask_from_order(order, n_mask)


def attention_mask(score: Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """AttMask-High: mask the ``round(ratio * L)`` patches with the highest score (attention or foreground).

    Args:
        score: float ``[B, L]``; equal scores are broken at random.

    Returns:
        bool ``[B, L]``, True = masked.
    """
    _check_ratio(mask_ratio)
    if not isinstance(score, Tensor) or score.dim() != 2 or not score.is_floating_point():
        raise ValueError(f"score must be a float tensor [B, L], got {getattr(score, 'shape', type(score))}")
    batch, length = score.shape
    perm = torch.rand(batch, length, device=score.device, generator=generator).argsort(1)
    by_score = torch.argsort(score.gather(1, perm), dim=1, descending=True, stable=True)
    return _mask_from_order(perm.gather(1, by_score), num_masked(length, mask_ratio))
