"""Per-iteration schedules as arrays indexed by the global optimiser step (MAE, He et al. 2022, Table 8), and the
one way every training stage applies them: :func:`set_lr` (and :func:`set_weight_decay`) once per optimiser step.

The learning rate warms up linearly from 0 over the first ``warmup_steps`` and then follows a half cosine to
``final``; values are precomputed for the run's own ``total_steps`` so a resumed run reads the same value at
the same step. The masking schedule's progress (paper Algorithm 1, line 7: alpha from the fraction of training
done) is likewise ``step / total_steps`` of this run, never a hard-coded epoch count.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
    warmup_offset: int = 0,
    after_warmup: bool = True,
) -> np.ndarray:
    """``float64 [total_steps]``: value at step i is

    * ``warmup_start + (base - warmup_start) * (i + warmup_offset) / warmup_steps`` for ``i < warmup_steps``
      (``warmup_offset=1``: the peak is reached on the last warm-up step, as MAE's fine-tune/probe recipes do);
    * ``final + (base - final) * (1 + cos(pi * (i - W) / (T - W))) / 2`` afterwards; with
      ``after_warmup=False`` the cosine runs over all steps, ``cos(pi * i / T)``, and the warm-up only replaces its
      start (timm's ``CosineLRScheduler`` without ``warmup_prefix``).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    i = np.arange(total_steps, dtype=np.float64)
    warm = warmup_start + (base - warmup_start) * (i[:warmup_steps] + warmup_offset) / max(warmup_steps, 1)
    if after_warmup:
        decay_len = total_steps - warmup_steps
        j = i[warmup_steps:] - warmup_steps
    else:
        decay_len, j = total_steps, i[warmup_steps:]
    cos = final + (base - final) * 0.5 * (1.0 + np.cos(math.pi * j / decay_len))
    return np.concatenate([warm, cos])


def poly_schedule(
    base: float,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 1.0,
    final: float = 0.0,
    warmup_ratio: float = 1e-6,
) -> np.ndarray:
    """``float64 [total_steps]`` (mmseg's poly + linear warm-up, paper Table 7 setup): ``(base - final) *
    (1 - i / T) ** power + final``, scaled during the first ``warmup_steps`` by ``1 - (1 - i / W) * (1 - ratio)``."""
    t = np.arange(total_steps, dtype=np.float64)
    lr = (base - final) * (1 - t / total_steps) ** power + final
    if warmup_steps > 0:
        w = t < warmup_steps
        lr[w] *= 1 - (1 - t[w] / warmup_steps) * (1 - warmup_ratio)
    return lr


def warmup_constant_schedule(start: float, end: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """``float64 [total_steps]``: linear from ``start`` to ``end`` over ``warmup_steps``, then ``end`` (DINO's
    teacher temperature)."""
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    return np.concatenate([np.linspace(start, end, warmup_steps), np.full(total_steps - warmup_steps, end)])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate = ``lr`` times its ``lr_scale`` (layer decay, or a head's own base rate)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def set_weight_decay(optimizer: torch.optim.Optimizer, wd: float) -> None:
    """Every group's weight decay = ``wd`` times its ``wd_scale`` (1 for decayed groups, 0 for norms, biases and
    tokens; a group without one is decayed when its decay was > 0 at build time)."""
    for g in optimizer.param_groups:
        g.setdefault("wd_scale", 1.0 if g["weight_decay"] > 0 else 0.0)
        g["weight_decay"] = wd * g["wd_scale"]


def scaled_lr(blr: float, effective_batch: int, reference_batch: int = 256) -> float:
    """MAE's linear scaling rule: ``lr = blr * effective_batch / 256``."""
    return blr * effective_batch / reference_batch


def progress(step: int, total_steps: int) -> float:
    """Fraction of training done at ``step`` (0 at the first step, < 1 at the last)."""
    return step / total_steps
