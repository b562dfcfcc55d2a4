"""The optimisers of every training stage: AdamW with MAE's parameter groups (no weight decay on norms, biases,
position embeddings and special tokens), with or without layer-wise lr decay.

Layer decay (BEiT; MAE fine-tuning, paper Table 7 segmentation): the encoder stem is layer 0, block ``i`` layer
``i + 1``, heads and necks layer ``L = depth + 1``; a parameter of layer ``l`` trains at ``lr * decay ** (L - l)``.
Groups come from timm's ``param_groups_layer_decay`` (the model's ``group_matcher``) and carry ``lr_scale``, which
:func:`semmae.engine.schedule.set_lr` multiplies in.
"""

from __future__ import annotations

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay

from semmae.utils.distributed import unwrap_model


def no_weight_decay_names(model: torch.nn.Module) -> set[str]:
    """Names the model lists in ``no_weight_decay()`` (cls/mask tokens, position embeddings), as full names."""
    fn = getattr(unwrap_model(model), "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights (matrices, conv kernels) and the rest (``ndim <= 1``, ``.bias``, and the
    model's ``no_weight_decay()`` names) with weight decay 0. Frozen parameters (MAE's fixed sin-cos position
    tables) are left out."""
    model = unwrap_model(model)
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_names(model))


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; fused kernels on CUDA."""
    return adamw(param_groups(model, weight_decay), lr=lr, betas=betas)


def adamw(groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with fused kernels when the parameters are on CUDA. Besides speed, that keeps fp16
    training free of a per-step host read: the loss scaler's ``step`` hands its inf check to a fused optimiser instead of
    reading it back (``found_inf.item()``) before every unfused step. The state dict is the same either way."""
    fused = any(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused or None)


def layer_decay_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, layer_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW over layer-decay groups (each group's lr starts at ``lr * lr_scale``)."""
    model = unwrap_model(model)
    groups = param_groups_layer_decay(
        model,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        no_weight_decay_list=sorted(no_weight_decay_names(model)),
    )
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return adamw(groups, lr=lr, betas=betas)
