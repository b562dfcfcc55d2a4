"""Self-distillation losses with centring and sharpening (DINO, Caron et al. 2021, Eq. 1-2 and Sec. 3.1; iBOT,
Zhou et al. 2022, Eq. 2-3).

* Sharpening: the teacher's softmax uses a low temperature ``tau_t`` (warmed up from 0.04), the student's 0.1.
* Centring: a running mean ``c`` of the teacher's outputs is subtracted before the teacher softmax,
  ``c <- m * c + (1 - m) * mean(teacher outputs)`` (averaged over every rank); centring alone would flatten the
  distribution and sharpening alone collapse it to one prototype, together they keep the teacher informative.
* Class-token loss: cross-entropy between the teacher's distribution on each global crop and the student's on
  every *other* crop (global or local), averaged over the pairs.
* Masked-patch loss (iBOT's MIM): for every masked patch of a global crop, cross-entropy between the teacher's
  distribution on the unmasked patch and the student's on the masked one; averaged over an image's masked
  patches, then over all images (an unmasked image counts 0). The patch centre tracks the teacher's outputs on
  the masked patches (as DINOv2's iBOT loss does), with its own running mean. As in iBOT's reference code, the
  head runs on *every* patch token and the mask weights the cross-entropies and the centre's mean: fixed shapes,
  so the step reads nothing back from the device (boolean indexing would need the masked count on the host).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semmae.utils import distributed as du


class Centering(nn.Module):
    """A running mean of teacher outputs, ``center [1, K]``; a buffer, so it is saved with the loss' state."""

    def __init__(self, dim: int, momentum: float):
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def update(self, teacher_out: Tensor, weight: Tensor | None = None) -> None:
        """``teacher_out [..., K]``: the mean over every rank's rows enters the EMA; with ``weight [...]`` (bool or
        float, e.g. a patch mask) the weighted mean (only the masked patches count). A no-op when the rows (or
        their weights) sum to 0 on every rank; no host sync either way."""
        rows = teacher_out.float().flatten(0, -2)  # [N, K]
        if weight is None:
            total, count = rows.sum(0), rows.new_full((1,), rows.shape[0])
        else:
            w = weight.reshape(-1).to(rows.dtype)  # [N]
            total, count = w @ rows, w.sum().reshape(1)
        stats = du.all_reduce_sum(torch.cat([total, count]))
        count = stats[-1]
        mean = (stats[:-1] / count.clamp_min(1)).unsqueeze(0)
        moved = self.center * self.momentum + mean * (1.0 - self.momentum)
        self.center.copy_(torch.where(count > 0, moved, self.center))  # no host sync


def class_token_loss(
    teacher_cls: Tensor,
    student_cls: Tensor,
    n_global: int,
    batch: int,
    center: Tensor,
    teacher_temp: float,
    student_temp: float,
) -> Tensor:
    """DINO's multi-crop cross-entropy.

    Args:
        teacher_cls: ``[n_global * B, K]`` teacher logits of the global crops, view-major (view 0's B rows first).
        student_cls: ``[V * B, K]`` student logits of all V crops, the global ones first in the same order.
        center: ``[1, K]``.

    Returns:
        The mean over (teacher view t, student view s != t) pairs of ``mean_b -sum_k p_t log q_s``.
    """
    t = F.softmax((teacher_cls.float() - center) / teacher_temp, dim=-1).chunk(n_global)
    s = F.log_softmax(student_cls.float() / student_temp, dim=-1).split(batch)
    total, terms = teacher_cls.new_zeros((), dtype=torch.float32), 0
    for i, p in enumerate(t):
        for j, logq in enumerate(s):
            if i == j:
                continue
            total = total + (-(p * logq).sum(-1)).mean()
            terms += 1
    return total / max(terms, 1)


def masked_patch_loss(
    teacher_patch: Tensor,
    student_patch: Tensor,
    mask: Tensor,
    center: Tensor,
    teacher_temp: float,
    student_temp: float,
) -> Tensor:
    """iBOT's masked-image-modelling loss, computed on every patch and weighted by the mask (fixed shapes).

    Args:
        teacher_patch / student_patch: ``[N, L, K]`` logits of every patch of the N global crops.
        mask: bool ``[N, L]`` (True = masked): only masked patches count.
        center: ``[1, K]``.

    Returns:
        ``mean_n ( sum_{masked l} CE_nl / max(#masked_n, 1) )``.
    """
    p = F.softmax((teacher_patch.float() - center) / teacher_temp, dim=-1)
    ce = -(p * F.log_softmax(student_patch.float() / student_temp, dim=-1)).sum(-1)  # [N, L]
    ce = torch.where(mask, ce, torch.zeros_like(ce))  # unmasked patches count 0
    per_image_count = mask.sum(1).clamp_min(1).to(ce.dtype)  # [N]
    return (ce.sum(1) / per_image_count).mean()
