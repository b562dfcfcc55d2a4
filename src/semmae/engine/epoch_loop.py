"""One epoch of an epoch-based training stage (linear probe, fine-tuning): the sampler's epoch, a progress bar on
the main process, the learning rate of each optimiser step from the run's per-step schedule, and a start inside the
epoch (a run stopped by SIGTERM mid-epoch resumes at its step: :mod:`semmae.engine.termination`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from semmae.engine.schedule import set_lr
from semmae.engine.termination import Termination, replayed


def scheduled_batches(
    loader: DataLoader,
    epoch: int,
    steps_per_epoch: int,
    optimizer: torch.optim.Optimizer,
    lr_schedule: np.ndarray,
    desc: str,
    show: bool = True,
    start: int = 0,
    termination: Termination | None = None,
    rng: dict | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(global step, batch)`` for one epoch, the step's learning rate already set (:func:`set_lr`).

    ``start``, ``rng``: the epoch's first ``start`` batches are loaded again and passed over, then ``rng`` is put back
    (:func:`~semmae.engine.termination.replayed`: a run stopped mid-epoch resumes at its step). ``termination``: a loader whose workers died of a group SIGTERM ends the epoch (:meth:`Termination.batches`).
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle each epoch
        sampler.set_epoch(epoch)
    batches = termination.batches(loader) if termination is not None else loader
    batches = replayed(batches, start, rng) if start or rng is not None else batches
    bar = tqdm(
        batches, desc=f"{desc} {epoch}", disable=not show, leave=False, total=steps_per_epoch, initial=start
    )
    for it, batch in enumerate(bar, start):
        step = epoch * steps_per_epoch + it
        set_lr(optimizer, float(lr_schedule[step]))
        yield step, batch
