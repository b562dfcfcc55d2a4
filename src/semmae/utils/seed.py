"""Seeding for reproducible runs (``--seed``)."""

from __future__ import annotations

import random

import numpy as np
import torch

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio) to spread seeds


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), stable across processes and Python versions."""
    h = 0
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch; each rank gets ``seed + rank`` so ranks draw different augmentations."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def rng_state() -> dict:
    """Every RNG's state as plain data (for checkpoints)."""
    state = {
        "python": list(random.getstate()[1])
        + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "python_version": random.getstate()[0],
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one per visible device
        state["cuda_own"] = torch.cuda.get_rng_state(torch.cuda.current_device())  # this rank's own device
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`. CUDA states are restored per device that is visible now (a run saved where 8
    GPUs were visible may resume where 4 are), then the saving rank's own device state onto this rank's device."""
    py = state["python"]
    gauss = None if py[-1] == -1 else py[-1]
    random.setstate((state["python_version"], tuple(int(x) for x in py[:-1]), gauss))
    np.random.set_state(
        ("MT19937", np.array(state["numpy"], dtype=np.uint32), int(state["numpy_pos"]), 0, 0.0)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        visible = torch.cuda.device_count()
        for index, cuda_state in enumerate(state["cuda"][:visible]):
            torch.cuda.set_rng_state(cuda_state, index)
        if "cuda_own" in state:
            torch.cuda.set_rng_state(state["cuda_own"], torch.cuda.current_device())
