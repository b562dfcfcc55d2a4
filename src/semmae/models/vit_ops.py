"""Operations on a timm ViT's blocks that the models and the stages share."""

from __future__ import annotations

import torch
from torch import nn

from semmae.errors import UserError


def cls_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention of the class token's query over all tokens in ``block``: x [B, T, D] -> [B, H, T]."""
    attn = block.attn
    if not hasattr(attn, "qkv"):
        raise UserError(
            f"cannot read attention weights from {type(attn).__name__}: it has no fused 'qkv' layer"
        )
    h = block.norm1(x)
    b, t, _ = h.shape
    qkv = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim)
    q = qkv[:, :1, 0].transpose(1, 2)  # [B, H, 1, d]: the CLS query only
    k = qkv[:, :, 1].transpose(1, 2)  # [B, H, T, d]
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]
