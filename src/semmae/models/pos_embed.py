"""Fixed 2D sine-cosine position embeddings in the layout of facebookresearch/mae (and so of its checkpoints).

Half of the channels encode the column, half the row; each half is ``[sin(pos * w_i), cos(pos * w_i)]`` with
``w_i = 1 / 10000 ** (i / (D / 4))``. A leading all-zero row is the class token's position.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """``pos`` float ``[N]`` -> ``[N, dim]``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = pos.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d_pos_embed(dim: int, grid_hw: tuple[int, int], cls_token: bool = True) -> Tensor:
    """Position table float ``[1, (1 if cls_token) + h * w, dim]`` for a row-major ``h x w`` patch grid."""
    if dim % 4 != 0:
        raise ValueError(f"embedding dim must be a multiple of 4 for 2D sin-cos positions, got {dim}")
    h, w = grid_hw
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.cat([_sincos_1d(dim // 2, cols.flatten()), _sincos_1d(dim // 2, rows.flatten())], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.float().unsqueeze(0)
