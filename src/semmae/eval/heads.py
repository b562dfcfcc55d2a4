"""Linear-probe heads and their optimisation (MAE linear probing, He et al. 2022 Sec. A.2; paper Table 3).

One shared ``BatchNorm1d(affine=False)`` (it has no parameters, so every head would compute the same thing)
feeds H independent linear classifiers, one per learning rate of the sweep: all heads see the same batch in one
pass over the features, and the best is reported (the dinov2 recipe). The learning rate of head h is
``lr_h = blr_h * global_batch / 256`` (MAE's linear scaling rule), kept as the group's ``lr_scale``, times a
per-iteration factor (:func:`semmae.engine.schedule.cosine_schedule` from 1 with a linear warm-up, applied by
:func:`semmae.engine.schedule.set_lr`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import Lars

from semmae.errors import UserError


class ProbeHeads(nn.Module):
    """BatchNorm (no affine) + H linear heads. Input features [B, D] -> logits [H, B, C]."""

    def __init__(self, dim: int, num_classes: int, num_heads: int = 1, init_std: float = 0.01):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_heads))
        for head in self.heads:
            nn.init.trunc_normal_(head.weight, std=init_std)
            nn.init.zeros_(head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.bn(features.float())
        return torch.stack([head(x) for head in self.heads])

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over heads of the mean cross-entropy: each head's gradient is its own CE gradient."""
        return sum(F.cross_entropy(lg, labels) for lg in logits)


def build_head_optimizer(
    heads: ProbeHeads, lrs: list[float], name: str = "lars", weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """One param group per head weight and bias, each with its peak learning rate as ``lr_scale``.

    LARS (timm's ``Lars``) adapts the weights' step by the trust ratio; biases are excluded from adaptation and
    weight decay, as in MAE's LARS. ``sgd`` is plain momentum SGD.
    """
    if len(lrs) != len(heads.heads):
        raise ValueError("one learning rate per head")
    groups = []
    for head, lr in zip(heads.heads, lrs):
        w_group = {"params": [head.weight], "lr": lr, "lr_scale": lr, "weight_decay": weight_decay}
        b_group = {"params": [head.bias], "lr": lr, "lr_scale": lr, "weight_decay": 0.0}
        if name == "lars":
            w_group["always_adapt"] = True
            b_group["always_adapt"] = False
        groups += [w_group, b_group]
    if name == "lars":
        return Lars(groups, lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    raise UserError(f"optimizer must be 'lars' or 'sgd', got {name!r}")


@torch.no_grad()
def head_metrics(heads: ProbeHeads, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096):
    """Correct top-1 / top-5 counts per head on features [N, D]: tensors [H] each."""
    was_training = heads.training
    heads.eval()
    h = len(heads.heads)
    c1 = torch.zeros(h, dtype=torch.long, device=features.device)
    c5 = torch.zeros(h, dtype=torch.long, device=features.device)
    for s in range(0, features.shape[0], batch_size):
        logits = heads(features[s : s + batch_size])  # [H, b, C]
        y = labels[s : s + batch_size]
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # [H, b, k]
        c1 += (top[..., 0] == y).sum(dim=1)
        c5 += (top == y[None, :, None]).any(dim=-1).sum(dim=1)
    heads.train(was_training)
    return c1, c5
