"""Images <-> patch sequences, and reconstructions that undo the norm-pix target (MAE, He et al. 2022, Sec. 4).

Patch vectors use MAE's layout ``(p, q, c)`` (row within patch, column within patch, channel), so predictions
match the official code and checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["patchify", "unpatchify", "normalize_patches", "reconstruct_images"]


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, (H/p)(W/p), p*p*C]`` (row-major patches, ``(p, q, c)`` inside each)."""
    b, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(
    x: Tensor, patch_size: int, grid_hw: tuple[int, int] | None = None, channels: int = 3
) -> Tensor:
    """``[B, h*w, p*p*C]`` -> ``[B, C, h*p, w*p]``; ``grid_hw`` defaults to a square grid."""
    b, length, _ = x.shape
    p = patch_size
    if grid_hw is None:
        side = int(round(length**0.5))
        grid_hw = (side, side)
    h, w = grid_hw
    if h * w != length:
        raise ValueError(f"{length} patches do not fill a {h}x{w} grid")
    x = x.reshape(b, h, w, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, h * p, w * p)


def normalize_patches(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Norm-pix target: each patch vector minus its mean, over sqrt(var + eps) (MAE's ``norm_pix_loss``)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def reconstruct_images(
    pred: Tensor,
    imgs: Tensor,
    mask: Tensor,
    patch_size: int,
    keep_index: Tensor | None = None,
    norm_pix_loss: bool = True,
    stats: str = "visible",
    paste_visible: bool = True,
    fill: float = 0.0,
) -> Tensor:
    """Turn predictions back into images.

    With a norm-pix target the prediction of a masked patch is in per-patch normalised units; it is mapped back
    with the mean and standard deviation of the image's *visible* patches (``stats="visible"``: no peeking at
    the hidden pixels), or with the hidden patch's own statistics (``stats="target"``, MAE's demo notebook).

    Args:
        pred: ``[B, L', p*p*C]`` model predictions.
        imgs: ``[B, C, H, W]`` the input images (same normalisation as the model saw).
        mask: bool ``[B, L']``, True = masked.
        patch_size: p.
        keep_index: long ``[B, L']`` patches that entered the model (patch-8 setting); None = all ``L``.
        norm_pix_loss: whether ``pred`` is in norm-pix units.
        stats: ``"visible"`` or ``"target"``.
        paste_visible: show the visible patches' true pixels instead of their predictions.
        fill: value of the patches that did not enter the model.

    Returns:
        ``[B, C, H, W]``.
    """
    if stats not in ("visible", "target"):
        raise ValueError(f"stats must be 'visible' or 'target', got {stats!r}")
    b, c, h, w = imgs.shape
    grid = (h // patch_size, w // patch_size)
    target = patchify(imgs, patch_size)
    if keep_index is not None:
        target = target.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
    out = pred.float()
    if norm_pix_loss:
        if stats == "target":
            mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        else:
            vis = (~mask).float().unsqueeze(-1)
            n_vis = vis.sum(1, keepdim=True).clamp_min(1)
            mean = (target.mean(-1, keepdim=True) * vis).sum(1, keepdim=True) / n_vis
            var = (target.var(-1, keepdim=True) * vis).sum(1, keepdim=True) / n_vis
            std = (var + 1e-6) ** 0.5
        out = out * std + mean
    if paste_visible:
        out = torch.where(mask.unsqueeze(-1), out, target)
    if keep_index is None:
        return unpatchify(out, patch_size, grid, c)
    full = torch.full((b, grid[0] * grid[1], out.shape[-1]), fill, dtype=out.dtype, device=out.device)
    full.scatter_(1, keep_index.unsqueeze(-1).expand(-1, -1, out.shape[-1]), out)
    return unpatchify(full, patch_size, grid, c)
