"""A non-finite loss is noticed on the device and acted on at log steps: no host sync per step.

Each optimiser step folds ``isfinite(loss)`` (and, without a grad scaler, ``isfinite(grad_norm)``: fp16 overflow
steps are skipped by the scaler itself) into one device tensor holding the first bad step. :meth:`check` reads it
(one ``.item()``, always an all-reduce-min under DDP so every rank stops together: a rank that stopped alone
would leave the others waiting in their next collective until the NCCL timeout) and raises
:class:`~semmae.errors.NonFiniteLossError` naming the step; training loops call it where they already sync: at log
steps, before checkpoints and at epoch ends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from semmae.errors import NonFiniteLossError
from semmae.utils import distributed as du

NO_BAD_STEP = 2**62  # "no non-finite step yet"


class NonFiniteWatch:
    """The first optimiser step whose loss (or gradient norm) was not finite, kept on the device."""

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), NO_BAD_STEP, dtype=torch.long, device=device)

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> None:
        """Fold one step in (no sync). ``grad_norm``: pass it only when no grad scaler skips overflow steps."""
        finite = torch.isfinite(loss)
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm)
        bad = torch.minimum(self.first_bad, torch.full_like(self.first_bad, step))
        self.first_bad.copy_(torch.where(finite, self.first_bad, bad))

    def check(self, explain: Callable[[int], str], reduce: Callable | None = None) -> None:
        """Raise ``NonFiniteLossError(explain(step))`` when some step was bad on *any* rank (a sync, and a
        collective under DDP: every rank calls it at the same steps). ``reduce``: the cross-rank minimum
        (default :func:`semmae.utils.distributed.all_reduce_min`, the identity in a world of one)."""
        first = int((reduce or du.all_reduce_min)(self.first_bad).item())
        if first != NO_BAD_STEP:
            raise NonFiniteLossError(explain(first))


def kept_checkpoint(path: str | Path | None) -> str:
    """What a divergence message says is kept: the checkpoint file when one was written, else that none was (a
    message must not name a file that does not exist)."""
    if path is not None and Path(path).is_file():
        return f"the last good checkpoint is {path}"
    return "no checkpoint had been written yet"
