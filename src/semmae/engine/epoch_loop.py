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
from semmae.engine.termination import Termination


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
) -> Iterator[tuple[int, dict]]:
    """Yield ``(global step, batch)`` for one epoch, the step's learning rate already set (:func:`set_lr`).

    ``start``: the epoch's first ``start`` batches are loaded (the epoch's order and augmentation seeds stay those of
    an uninterrupted epoch when the loader's generator is restored to its state at the epoch's start) and passed
    over. ``termination``: a loader whose workers died of a group SIGTERM ends the epoch (:meth:`Termination.batches`).
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle each epoch
        sampler.set_epoch(epoch)
    batches = termination.batches(loader) if termination is not None else loader
    bar = tqdm(batches, desc=f"{desc} {epoch}", disable=not show, leave=False, total=steps_per_epoch)
    for it, batch in enumerate(bar):
        if it < start:
            continue
        step = epoch * steps_per_epoch + it
        set_lr(optimizer, float(lr_schedule[step]))
        yield step, batch
