"""MAE's initialisation of an encoder (``--init mae``, :mod:`semmae.models.init_schemes`): xavier-uniform Linear
and patch projection, class token N(0, 0.02), LayerNorm 1/0 and the fixed 2-D sin-cos position table."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from semmae.models.pos_embed import sincos_2d_pos_embed


@torch.no_grad()
def xavier_patch_projection_(proj: nn.Conv2d) -> None:
    """MAE's init of the patch projection: xavier-uniform on the weight viewed as a Linear (bias left as is)."""
    w = proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))


@torch.no_grad()
def xavier_linears_unit_norms_(module: nn.Module) -> None:
    """MAE's init of every Linear (xavier-uniform, zero bias) and LayerNorm (weight 1, bias 0) under ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def mae_init_(vit: VisionTransformer) -> VisionTransformer:
    """Re-initialise ``vit`` in place as an MAE encoder at step 0 (see the module docstring); returns it."""
    xavier_patch_projection_(vit.patch_embed.proj)
    if vit.patch_embed.proj.bias is not None:  # MAE leaves this bias at PyTorch's default; kept as measured
        nn.init.zeros_(vit.patch_embed.proj.bias)
    if vit.cls_token is not None:
        nn.init.normal_(vit.cls_token, std=0.02)
    if vit.pos_embed is not None:
        grid = tuple(vit.patch_embed.grid_size)
        table = sincos_2d_pos_embed(vit.embed_dim, grid, cls_token=vit.num_prefix_tokens > 0)
        if tuple(table.shape) != tuple(vit.pos_embed.shape):
            raise ValueError(
                f"position table {tuple(vit.pos_embed.shape)} is not a sin-cos table {tuple(table.shape)}"
            )
        vit.pos_embed.copy_(table)
    xavier_linears_unit_norms_(vit)
    return vit
