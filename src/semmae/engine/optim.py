"""AdamW with MAE's parameter groups: no weight decay on norms, biases, position embeddings and special tokens."""

from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay

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
    groups = param_groups(model, weight_decay)
    fused = any(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused or None)

