"""Wall-clock timing for the benchmarks (``benchmarks/``): one device synchronise, functions timed in turns,
windows of steps, and the rates a run logged. The machines are shared and drift, so a benchmark reports the ratio
of two things timed in the same process, in turns, rather than absolute seconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semmae.utils.run_logger import read_log


def synchronize(device: Any) -> None:
    """Wait until ``device`` (a ``torch.device`` or its name) has run the work queued on it; no-op off CUDA."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(
    fns: list[Callable[[], Any]], repeats: int, device: Any = "cpu", warmup: int = 3
) -> list[float]:
    """Median seconds of each function over ``repeats`` turns; the functions run in turns (one call each per
    turn) so that a drift of the machine's load hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def mean_time(fn: Callable[[], Any], iters: int, device: Any = "cpu", warmup: int = 1) -> float:
    """Mean seconds of ``fn`` over one window of ``iters`` calls after ``warmup`` untimed ones."""
    return sum(step_times(lambda _: fn(), iters, device, warmup=warmup, each=False)) / iters


def step_times(
    step: Callable[[int], Any],
    steps: int,
    device: Any = "cpu",
    warmup: int = 0,
    start: int = 0,
    each: bool = True,
) -> list[float]:
    """Seconds of ``step(i)`` for ``steps`` calls after ``warmup`` untimed ones, ``i`` counting from ``start``.

    ``each``: one time per step (the device synchronised after every step); otherwise one time for the whole
    window, the device's queue kept full between steps as in a run."""
    for i in range(start, start + warmup):
        step(i)
    synchronize(device)
    times = []
    t0 = time.perf_counter()
    for i in range(start + warmup, start + warmup + steps):
        step(i)
        if each:
            synchronize(device)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
    if not each:
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def logged(log: str | Path, key: str, skip: int = 1) -> list[float]:
    """The values of ``key`` in a run's ``log.jsonl``, in order, the first ``skip`` records that have it dropped
    (warm-up; all kept when that would leave none)."""
    values = [r[key] for r in read_log(Path(log)) if key in r]
    return values[skip:] or values


def logged_rate(log: str | Path, batch_size: int, skip: int = 1) -> float:
    """Images/s of a run between its first training record after ``skip`` warm-up records and its last one (from
    the records' ``step`` and ``time``): data loading, the step and the run's bookkeeping together."""
    records = [r for r in read_log(Path(log)) if "loss" in r][skip:]
    steps = records[-1]["step"] - records[0]["step"]
    return steps * batch_size / (records[-1]["time"] - records[0]["time"])
