"""Deterministic, resumable data order for (distributed) pretraining.

Two pieces make a run reproducible to the step regardless of the number of ranks and workers:

* :class:`StepSampler` (a ``DistributedSampler``) permutes the dataset once per epoch from ``seed + epoch``,
  cuts it into global batches of ``world_size x accum_iter x batch_size`` images (the remainder is dropped, as in
  MAE) and hands rank ``r`` the contiguous micro-batches ``r * accum_iter .. (r + 1) * accum_iter - 1`` of every
  global batch. It can start at any step of an epoch (``set_position``), which is what a mid-epoch resume needs,
  and it can run on across epochs to the run's last step (``set_span``): one loader iterator then serves the
  whole run, and its workers prefetch the next epoch's first batches while this epoch ends, instead of starting
  empty at every epoch (on an H200 an epoch start cost about 2.7 s of JPEG decoding,
  ``benchmarks/results/2026-12-04-gpu-validate-h200.md``). The keys and their order are the same either way.
* :class:`SeededItems` makes each item's random augmentation a function of ``(seed, epoch, index)`` only: the
  sampler yields ``(epoch, index)`` keys and the wrapper seeds torch's RNG from them around ``dataset[index]``.
  So a worker's RNG state never has to be saved, and 1 rank x 2 accumulation steps sees exactly the
  micro-batches that 2 ranks x 1 step see.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from semmae.utils.seed import mix_seed


class StepSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys for this rank, global batch by global batch, from a start step on.

    Args:
        dataset: the (wrapped) dataset; only ``len`` is used.
        batch_size: images per micro-batch on one rank. accum_iter: micro-batches per optimiser step.
        num_replicas / rank: the world (defaults to the process group). seed: shuffling seed.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        accum_iter: int = 1,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.accum_iter = int(batch_size), int(accum_iter)
        self.global_batch = self.batch_size * self.accum_iter * self.num_replicas
        self.steps_per_epoch = len(self.dataset) // self.global_batch
        self.start_step = 0
        self.end_step: int | None = None  # a run-wide optimiser step to stop before; None: the epoch's end

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        """Continue epoch ``epoch`` at optimiser step ``start_step`` within it (to that epoch's end)."""
        self.set_epoch(epoch)
        self.start_step = int(start_step)

    def set_span(self, start: int, end: int) -> None:
        """Yield the run's optimiser steps ``start .. end - 1`` (counted from the run's first step), across as
        many epochs as they cover: each epoch's part exactly as :meth:`set_position` would give it."""
        if self.steps_per_epoch < 1:
            raise ValueError("no whole global batch in the dataset")
        epoch, step = divmod(int(start), self.steps_per_epoch)
        self.set_position(epoch, step)
        self.end_step = int(end)  # _steps() makes an end before the start an empty span

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start_step = 0
        self.end_step = None

    def _steps(self) -> range:
        first = self.epoch * self.steps_per_epoch + self.start_step
        last = (self.epoch + 1) * self.steps_per_epoch if self.end_step is None else self.end_step
        return range(first, max(first, last))

    def __len__(self) -> int:
        return len(self._steps()) * self.accum_iter * self.batch_size

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return torch.randperm(len(self.dataset), generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_rank = self.accum_iter * self.batch_size
        epoch, order = None, []
        for run_step in self._steps():
            e, step = divmod(run_step, self.steps_per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            lo = step * self.global_batch + self.rank * per_rank
            for i in order[lo : lo + per_rank]:
                yield (epoch, i)


class SeededItems(Dataset):
    """``dataset[(epoch, index)]`` with torch's RNG seeded from ``(seed, epoch, index)`` (restored afterwards)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, index))
            return self.dataset[index]
