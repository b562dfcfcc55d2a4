"""--num-workers auto: how many loader workers a rank gets, and at what scheduling priority they run."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from semmae.data.workers import (
    WorkerPlan,
    auto_worker_plan,
    idle_priority,
    lower_priority,
    parse_num_workers,
)


def test_auto_plan_gives_jpeg_decoding_idle_workers_on_cores_the_step_uses():
    # a 2-core box, 2 compute threads: no core is spare, so JPEG decoding gets one idle-priority worker per core
    assert auto_worker_plan(False, "cpu", cores=2, compute_threads=2) == WorkerPlan(2, idle=True)
    assert auto_worker_plan(False, "cpu", cores=1, compute_threads=1) == WorkerPlan(1, idle=True)
    assert auto_worker_plan(False, "cpu", cores=64, compute_threads=64) == WorkerPlan(16, idle=True)  # capped
    # packed data never needs a worker on a busy core
    assert auto_worker_plan(True, "cpu", cores=2, compute_threads=2) == WorkerPlan(0)
    # spare cores: workers there, at a lowered (not idle) priority
    assert auto_worker_plan(False, "cpu", cores=16, compute_threads=4) == WorkerPlan(12)
    # a GPU node: 96 cores, 8 ranks -> 12 cores each, one drives the GPU
    assert auto_worker_plan(False, "cuda", local_world_size=8, cores=96) == WorkerPlan(11)
    assert auto_worker_plan(True, "cuda", local_world_size=8, cores=96) == WorkerPlan(2)
    assert auto_worker_plan(False, "cuda", cores=256).count == 16  # capped
    assert WorkerPlan(2, idle=True).init_fn is idle_priority and WorkerPlan(3).init_fn is lower_priority
    assert math.isfinite(auto_worker_plan(False, "cpu").count)  # this machine, its own core count


def test_parse_num_workers():
    assert parse_num_workers("auto") is None and parse_num_workers("3") == 3 and parse_num_workers(0) == 0
    for bad in ("-1", "many"):
        with pytest.raises(ValueError):
            parse_num_workers(bad)


class _Priority(Dataset):
    """Each item: the scheduling policy and niceness of the process that loads it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_workers_run_at_the_priority_their_init_fn_sets():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    idle = DataLoader(_Priority(), batch_size=None, num_workers=1, worker_init_fn=idle_priority)
    assert all(row.tolist()[0] == os.SCHED_IDLE for row in idle)
    low = DataLoader(_Priority(), batch_size=None, num_workers=1, worker_init_fn=lower_priority)
    assert all(row.tolist() == [os.SCHED_OTHER, min(base + 10, 19)] for row in low)
    # the training process itself is untouched
    assert os.sched_getscheduler(0) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, 0) == base


def test_worker_plan_of_a_flag_value():
    """``--num-workers N`` is N workers at a lowered priority; ``auto`` is the machine's plan (parts verbs)."""
    from semmae.data.workers import WorkerPlan, auto_worker_plan, worker_plan

    assert worker_plan("3", "cpu") == WorkerPlan(3) and worker_plan(0, "cuda") == WorkerPlan(0)
    assert worker_plan("auto", "cpu") == auto_worker_plan(False, "cpu")
    assert worker_plan("auto", "cuda", packed=True) == auto_worker_plan(True, "cuda")
