"""One epoch of an epoch-based training stage (linear probe, fine-tuning): the sampler's epoch, a progress bar on
the main process, and the learning rate of each optimiser step from the run's per-step schedule."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from semmae.engine.schedule import set_lr


def scheduled_batches(
    loader: DataLoader,
    epoch: int,
    steps_per_epoch: int,
    optimizer: torch.optim.Optimizer,
    lr_schedule: np.ndarray,
    desc: str,
    show: bool = True,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(global step, batch)`` for one epoch, the step's learning rate already set (:func:`set_lr`)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle each epoch
        sampler.set_epoch(epoch)
    for it, batch in enumerate(tqdm(loader, desc=f"{desc} {epoch}", disable=not show, leave=False)):
        step = epoch * steps_per_epoch + it
        set_lr(optimizer, float(lr_schedule[step]))
        yield step, batch
