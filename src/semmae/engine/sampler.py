"""Deterministic, resumable data order for (distributed) pretraining.

Two pieces make a run reproducible to the step regardless of the number of ranks and workers:

* :class:`StepSampler` (a ``DistributedSampler``) permutes the dataset once per epoch from ``seed + epoch``,
  cuts it into global batches of ``world_size x accum_iter x batch_size`` images (the remainder is dropped, as in
  MAE) and hands rank ``r`` the contiguous micro-batches ``r * accum_iter .. (r + 1) * accum_iter - 1`` of every
  global batch. It can start at any step of an epoch (``set_position``), which is what a mid-epoch resume needs.
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

from semmae.utils.seed import mix_seed  # its home; importable from here as before


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

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        """Continue epoch ``epoch`` at optimiser step ``start_step`` within it."""
        self.set_epoch(epoch)
        self.start_step = int(start_step)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start_step = 0

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_iter * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        per_rank = self.accum_iter * self.batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            lo = step * self.global_batch + self.rank * per_rank
            for i in order[lo : lo + per_rank]:
                yield (self.epoch, i)


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
