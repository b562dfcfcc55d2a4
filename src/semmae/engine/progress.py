"""What a training loop shows while it runs: a tqdm bar on the main process, an ETA, peak memory."""

from __future__ import annotations

import math

import torch


def step_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    """A tqdm bar of optimiser steps, or ``None`` when disabled (callers test ``bar is not None``)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False)


def fmt_eta(seconds: float) -> str:
    """``h:mm:ss``, or ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated CUDA memory on a GPU, max resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
