"""Masks as index tensors, for MAE-style code, and the patch-8 setting's foreground selection.

``mask_to_ids`` turns a boolean mask into the ``(ids_keep, ids_restore)`` pair that facebookresearch/mae's
``random_masking`` returns, so a semantic mask drops into any MAE-derived model (see docs/masking.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from semmae.masking._checks import assert_on_device, may_read

__all__ = ["mask_to_ids", "ids_to_mask", "foreground_keep_index"]


def mask_to_ids(mask: Tensor, num_masked: int | None = None) -> tuple[Tensor, Tensor]:
    """MAE-style indices of a mask with the same number of masked patches in every row.

    Args:
        mask: bool ``[B, L]``, True = masked.
        num_masked: the masked count of every row, when the caller knows it (``round(ratio * L)``): then
            nothing is read back from the device (off the CPU the count is a device-side assert). Without it the
            count is read from the mask (a host sync).

    Returns:
        ``ids_keep`` long ``[B, L_keep]`` (visible patches, ascending) and ``ids_restore`` long ``[B, L]`` such that
        ``cat([visible, masked], 1).gather(1, ids_restore)`` puts every token back at its grid position (MAE's
        convention: ``ids_shuffle`` lists the visible patches first).
    """
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.dtype != torch.bool:
        shape = list(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor [B, L], got {shape} {getattr(mask, 'dtype', '')}")
    counts = mask.sum(1)
    if num_masked is not None and not may_read(mask):
        assert_on_device(counts == num_masked, f"every row of the mask must hold {num_masked} masked patches")
    elif counts.numel() and not bool((counts == (counts[0] if num_masked is None else num_masked)).all()):
        raise ValueError(
            f"every row of the mask must hold the same number of masked patches"
            f"{'' if num_masked is None else f' ({num_masked})'}, got {counts.min().item()} to {counts.max().item()}"
        )
    if num_masked is None:
        num_masked = int(counts[0]) if counts.numel() else 0
    n_keep = mask.shape[1] - num_masked
    ids_shuffle = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, :n_keep], ids_restore


def ids_to_mask(ids_restore: Tensor, n_keep: int) -> Tensor:
    """Inverse of :func:`mask_to_ids`: bool ``[B, L]`` from ``ids_restore`` ``[B, L]`` and the visible count."""
    shuffled = torch.ones_like(ids_restore, dtype=torch.bool)
    shuffled[:, :n_keep] = False
    return shuffled.gather(1, ids_restore)


def foreground_keep_index(
    fg: Tensor,
    keep_fraction: float = 0.25,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Indices of the most-foreground patches (the paper's patch-8 setting, Sec. 4.1).

    With 8x8 patches the paper "removes 3/4 patches that are most likely to be the background": the quarter of
    the grid with the highest foreground score enters the model.

    Args:
        fg: float ``[B, L]`` foreground score per patch (e.g. ``PartCache`` fg, 1 = foreground).
        keep_fraction: fraction of patches kept, in (0, 1]; ``round(keep_fraction * L)`` (at least 1) are kept.
        generator: random source (on ``fg``'s device) for breaking equal scores, as the mask functions take it;
            the same state gives the same indices.
        noise: float ``[B, L]`` uniform draws instead of ``generator`` (``torch.rand(B, L, generator=...)`` gives
            the same indices as that generator); a pure function of tensors then (``torch.compile`` traces it).

    Returns:
        long ``[B, L_sub]``, each row sorted ascending (grid order). Equal scores at the cut are broken uniformly
        at random (a cache's 5-bit foreground and its resized cells make such ties common; a raster-order tie
        break would favour the top rows).
    """
    if not isinstance(fg, Tensor) or fg.dim() != 2 or not fg.is_floating_point():
        shape = list(fg.shape) if isinstance(fg, Tensor) else type(fg).__name__
        raise ValueError(f"fg must be a float tensor [B, L], got {shape} {getattr(fg, 'dtype', '')}")
    if isinstance(keep_fraction, bool) or not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    batch, length = fg.shape
    n_keep = max(1, int(round(keep_fraction * length)))
    # a random permutation first, then a stable sort by score: equal scores keep their random relative order
    if noise is None:
        noise = torch.rand(batch, length, device=fg.device, generator=generator)
    perm = noise.argsort(1)
    by_score = torch.argsort(fg.gather(1, perm), dim=1, descending=True, stable=True)[:, :n_keep]
    return perm.gather(1, by_score).sort(dim=1).values
