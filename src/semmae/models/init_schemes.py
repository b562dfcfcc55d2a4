"""Initialisations of an untrained encoder (the "random init" baseline of every table).

The honest baseline for a pretrained encoder is the same network at the start of its own pretraining. MAE-family
pretraining (this package, facebookresearch/mae, the official SemMAE) starts from MAE's init - Linear and the
flattened patch projection xavier-uniform, class token N(0, 0.02), LayerNorm 1/0 and a *fixed 2-D sin-cos position
table* - while a fresh timm ``VisionTransformer`` draws truncated-normal(0.02) weights and a random learned position
table. The two differ in what a frozen probe can read (no positions at all in timm's); issue 9's anchor measured
the MAE-init encoder.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from semmae.models.pos_embed import sincos_2d_pos_embed

INIT_SCHEMES = ("auto", "mae", "timm")
#: checkpoint layouts whose pretraining starts from MAE's init ("auto" picks "mae" for them)
MAE_FAMILY_LAYOUTS = ("semmae_pretrain", "mae_release")


def init_scheme_field() -> Any:
    """The ``--init`` option of every command that can build a random-init baseline."""
    return field(
        default="auto",
        metadata={
            "help": "with --random-init: mae = MAE's init (xavier, fixed sin-cos positions: where MAE/SemMAE "
            "pretraining starts), timm = timm's default, auto = mae for MAE-family checkpoints, else timm",
            "choices": INIT_SCHEMES,
        },
    )


def resolve_init_scheme(scheme: str, layout: str | None) -> str:
    """``auto`` -> ``mae`` for a checkpoint of an MAE-family layout, else ``timm``."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {INIT_SCHEMES}")
    if scheme != "auto":
        return scheme
    return "mae" if layout in MAE_FAMILY_LAYOUTS else "timm"


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
