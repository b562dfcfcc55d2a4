"""How many DataLoader worker processes a rank gets (``--num-workers auto``), and at what priority.

Loader workers and the training step share the machine's cores. On a GPU node the step needs one core per rank
(the process driving its GPU); on a CPU run it needs as many cores as torch's compute threads. ``auto`` gives the
loader what is left over:

* **Spare cores** (a GPU node, or a CPU run with fewer compute threads than cores): JPEG folders get one worker
  per spare core (at most 16), at a lower priority (nice 10); a packed dataset, whose batches are a copy out of a
  memory map, gets up to two (to hide page faults on a cold or networked disk).
* **No spare core** (a CPU run whose compute threads take every core, e.g. torch's default on a small machine):
  a pack gets none; a JPEG folder gets one worker per core (at most 16), at *idle* priority (Linux
  ``SCHED_IDLE``; elsewhere nice 19). A worker of normal or merely lowered priority takes a core in the middle
  of the step's parallel regions, and then both compute threads wait at the barrier: on 2 cores, one nice-10
  worker ran end to end at 0.86x the step alone, serial decoding between steps (0 workers) at 0.90x, and idle
  workers at 0.93x (``benchmarks/results/2026-11-29-input-pipeline-cpu.md``, runs 10-12). Idle workers run
  almost only in the step's idle moments, and when the step waits for a batch they decode on every core at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
MAX_AUTO_WORKERS = 16


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or SLURM restricts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerPlan:
    """``count`` loader workers; ``idle``: they share cores with the step's threads, so they run at idle
    priority (:func:`idle_priority`), else at a lowered one (:func:`lower_priority`)."""

    count: int
    idle: bool = False

    @property
    def init_fn(self) -> Callable[[int], None]:
        return idle_priority if self.idle else lower_priority

    @property
    def loader_args(self) -> dict[str, Any]:
        """The plan as ``DataLoader`` keywords: ``num_workers`` and, when there are workers, their priority."""
        return {"num_workers": self.count, "worker_init_fn": self.init_fn if self.count else None}


def auto_worker_plan(
    packed: bool,
    device_type: str,
    local_world_size: int = 1,
    compute_threads: int | None = None,
    cores: int | None = None,
) -> WorkerPlan:
    """The workers of ``--num-workers auto`` for one rank (see the module docstring)."""
    import torch  # here, not at the top: config validation (check_num_workers) runs without torch

    cores = available_cores() if cores is None else cores
    per_rank = max(1, cores // max(1, local_world_size))
    busy = (compute_threads or torch.get_num_threads()) if device_type == "cpu" else 1
    spare = per_rank - busy
    if packed:
        return WorkerPlan(max(0, min(2, spare)))
    if spare >= 1:
        return WorkerPlan(min(spare, MAX_AUTO_WORKERS))
    return WorkerPlan(min(per_rank, MAX_AUTO_WORKERS), idle=True)


def parse_num_workers(value: str | int) -> int | None:
    """``"auto"`` -> None, ``"4"`` -> 4; raises ValueError for anything else (or a negative count)."""
    if str(value).strip().lower() == AUTO:
        return None
    n = int(str(value))
    if n < 0:
        raise ValueError(value)
    return n


def worker_plan(value: str | int, device_type: str, packed: bool = False) -> WorkerPlan:
    """The loader workers of a ``--num-workers`` value: a count as given, ``auto`` -> :func:`auto_worker_plan`
    (one rank; the step trainer plans per rank itself)."""
    n = parse_num_workers(value)
    return auto_worker_plan(packed, device_type) if n is None else WorkerPlan(n)


def check_num_workers(value: str | int) -> None:
    """Config validation of ``--num-workers``: a UserError unless it is ``auto`` or a count >= 0."""
    from semmae.errors import UserError

    try:
        parse_num_workers(value)
    except ValueError:
        raise UserError(f"--num-workers must be 'auto' or a count >= 0, got {value!r}") from None


def idle_priority(_worker_id: int = 0) -> None:
    """``worker_init_fn``: Linux ``SCHED_IDLE``, the scheduler's lowest weight (below nice 19): the worker runs
    on cores that have nothing else to do and gets almost no time while the step's threads run. Where that
    policy is missing or refused: the lowest niceness."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        lower_priority(increment=19)


def lower_priority(_worker_id: int = 0, increment: int = 10) -> None:
    """``worker_init_fn``: raise this worker's niceness so the training step's threads are scheduled first."""
    try:
        os.nice(increment)
    except OSError:  # not permitted here: keep the default priority
        pass
