"""The foreground score of a ViT's patches: its last-layer CLS attention, averaged over heads, resized bilinearly
to the G x G grid asked for and min-max normalised per image to [0, 1]. The class token of a self-supervised ViT
attends to the object (DINO, iBOT), so this ranks object cells above background ones; the patch-8 setting keeps
the most-foreground quarter of the patches (paper Sec. 4.1). ``semmae parts export`` stores it in the part cache
(:mod:`semmae.parts.inference`); kept-token evaluation computes it from the evaluated encoder
(:mod:`semmae.models.kept_tokens`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semmae.errors import UserError
from semmae.models.vit_ops import last_cls_attention


def to_grid(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, L] maps on a square g x g patch grid -> [B, C, grid, grid] (bilinear when the sizes differ)."""
    b, c, n = maps.shape
    g = int(round(n**0.5))
    x = maps.reshape(b, c, g, g)
    if g != grid:
        x = F.interpolate(x.float(), size=(grid, grid), mode="bilinear", align_corners=False)
    return x


def foreground_score(cls_attn: torch.Tensor, grid: int) -> torch.Tensor:
    """CLS attention [B, H, L] -> foreground score [B, grid, grid] in [0, 1] (see module docstring)."""
    fg = to_grid(cls_attn.float().mean(dim=1, keepdim=True), grid)[:, 0]
    lo = fg.flatten(1).min(dim=1).values[:, None, None]
    hi = fg.flatten(1).max(dim=1).values[:, None, None]
    return ((fg - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


@torch.no_grad()
def encoder_foreground(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ``attention`` source: the encoder's last-layer CLS attention over its patches, head-averaged and min-max
    normalised per image (the same score ``parts export`` stores), float ``[B, L]``. ``model``: a timm
    ``VisionTransformer``, or a model that gives that attention itself (``last_cls_attention(images)`` ->
    ``[B, H, L]``: this project's MAE, scored during pretraining)."""
    if hasattr(model, "last_cls_attention"):
        attn = model.last_cls_attention(images)
    else:
        if model.num_prefix_tokens < 1 or model.cls_token is None:
            raise UserError(
                "the 'attention' foreground needs an encoder with a class token; give part caches instead"
            )
        attn = last_cls_attention(model, images)  # [B, H, L]
    grid = int(round(attn.shape[-1] ** 0.5))
    return foreground_score(attn, grid).flatten(1)
