"""AdamW with layer-wise lr decay (BEiT) and the poly schedule with linear warmup (mmseg, paper Table 7 setup).

Layer decay: the encoder stem is layer 0, block ``i`` layer ``i + 1``, the necks and heads layer ``L = depth + 1``;
a parameter of layer ``l`` trains at ``lr * decay ** (L - l)``. Groups are built by timm's
``param_groups_layer_decay`` from :meth:`Segmentor.group_matcher`; each carries ``lr_scale``. No weight decay on
1-D parameters (norms, biases) and on the position table / class token.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.optim import param_groups_layer_decay
from torch import nn


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW over layer-decay groups; the scheduler sets each group's lr to ``schedule[it] * lr_scale``."""
    groups = param_groups_layer_decay(
        model,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        no_weight_decay_list=sorted(model.no_weight_decay()),
    )
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


def poly_schedule(
    base_lr: float,
    iters: int,
    warmup_iters: int,
    power: float = 1.0,
    min_lr: float = 0.0,
    warmup_ratio: float = 1e-6,
) -> np.ndarray:
    """Per-iteration lr ``[iters]``: ``poly(t) = (base - min) * (1 - t / iters) ** power + min``; during the first
    ``warmup_iters`` steps it is scaled by ``k = 1 - (1 - t / warmup) * (1 - warmup_ratio)`` (mmcv linear warmup)."""
    t = np.arange(iters, dtype=np.float64)
    lr = (base_lr - min_lr) * (1 - t / iters) ** power + min_lr
    if warmup_iters > 0:
        w = t < warmup_iters
        lr[w] *= 1 - (1 - t[w] / warmup_iters) * (1 - warmup_ratio)
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
