"""Per-iteration schedules as arrays indexed by the global optimiser step (MAE, He et al. 2022, Table 8).

The learning rate warms up linearly from 0 over the first ``warmup_steps`` and then follows a half cosine to
``final``; values are precomputed for the run's own ``total_steps`` so a resumed run reads the same value at
the same step. The masking schedule's progress (paper Algorithm 1, line 7: alpha from the fraction of training
done) is likewise ``step / total_steps`` of this run, never a hard-coded epoch count.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """``float64 [total_steps]``: value at step i is

    * ``warmup_start + (base - warmup_start) * i / warmup_steps`` for ``i < warmup_steps``;
    * ``final + (base - final) * (1 + cos(pi * (i - W) / (T - W))) / 2`` afterwards.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    i = np.arange(total_steps, dtype=np.float64)
    warm = warmup_start + (base - warmup_start) * i[:warmup_steps] / max(warmup_steps, 1)
    decay_len = total_steps - warmup_steps
    j = i[warmup_steps:] - warmup_steps
    cos = final + (base - final) * 0.5 * (1.0 + np.cos(math.pi * j / decay_len))
    return np.concatenate([warm, cos])


def scaled_lr(blr: float, effective_batch: int, reference_batch: int = 256) -> float:
    """MAE's linear scaling rule: ``lr = blr * effective_batch / 256``."""
    return blr * effective_batch / reference_batch


def progress(step: int, total_steps: int) -> float:
    """Fraction of training done at ``step`` (0 at the first step, < 1 at the last)."""
    return step / total_steps
