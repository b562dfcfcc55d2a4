"""AdamW with layer-wise lr decay (BEiT) for the segmentation transfer (paper Table 7 setup; the poly schedule is
:func:`semmae.engine.schedule.poly_schedule`).

Layer decay: the encoder stem is layer 0, block ``i`` layer ``i + 1``, the necks and heads layer ``L = depth + 1``;
a parameter of layer ``l`` trains at ``lr * decay ** (L - l)``. Groups are built by timm's
``param_groups_layer_decay`` from :meth:`Segmentor.group_matcher`; each carries ``lr_scale``. No weight decay on
1-D parameters (norms, biases) and on the position table / class token.
"""

from __future__ import annotations

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

