"""How many DataLoader worker processes a rank gets (``--num-workers auto``).

Loader workers and the training step share the machine's cores. On a GPU node the step needs one core per rank
(the process driving its GPU); on a CPU run it needs as many cores as torch's compute threads. ``auto`` gives the
loader what is left over and never takes a core the step uses: decoding JPEG folders needs at least one worker
(else the decode runs between steps, serially), and a packed dataset, whose batches are a copy out of a memory
map, needs none unless cores are spare (then up to two, to hide page faults on a cold or networked disk).
Workers started by ``auto`` also run at a lower scheduling priority, so where they must share a core with the
step (a small CPU machine) the step's threads run first and the workers fill the gaps.
"""

from __future__ import annotations

import os

import torch

AUTO = "auto"
MAX_AUTO_WORKERS = 16


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or SLURM restricts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def auto_num_workers(
    packed: bool,
    device_type: str,
    local_world_size: int = 1,
    compute_threads: int | None = None,
    cores: int | None = None,
) -> int:
    """The worker count of ``--num-workers auto`` for one rank (see the module docstring)."""
    cores = available_cores() if cores is None else cores
    per_rank = max(1, cores // max(1, local_world_size))
    busy = (compute_threads or torch.get_num_threads()) if device_type == "cpu" else 1
    spare = per_rank - busy
    if packed:
        return max(0, min(2, spare))
    return max(1, min(spare, MAX_AUTO_WORKERS))


def parse_num_workers(value: str | int) -> int | None:
    """``"auto"`` -> None, ``"4"`` -> 4; raises ValueError for anything else (or a negative count)."""
    if str(value).strip().lower() == AUTO:
        return None
    n = int(str(value))
    if n < 0:
        raise ValueError(value)
    return n


def check_num_workers(value: str | int) -> None:
    """Config validation of ``--num-workers``: a UserError unless it is ``auto`` or a count >= 0."""
    from semmae.errors import UserError

    try:
        parse_num_workers(value)
    except ValueError:
        raise UserError(f"--num-workers must be 'auto' or a count >= 0, got {value!r}") from None


def lower_priority(_worker_id: int = 0, increment: int = 10) -> None:
    """``worker_init_fn``: raise this worker's niceness so the training step's threads are scheduled first."""
    try:
        os.nice(increment)
    except OSError:  # not permitted here: keep the default priority
        pass
