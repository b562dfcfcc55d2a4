"""RNG state round trips, including CUDA states saved where more GPUs were visible (mocked devices)."""

from __future__ import annotations

import random

import torch

from semmae.utils import seed as seed_mod


def test_rng_state_round_trip_on_the_cpu():
    seed_mod.seed_everything(3)
    state = seed_mod.rng_state()
    first = (random.random(), torch.rand(2))
    seed_mod.set_rng_state(state)
    second = (random.random(), torch.rand(2))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_cuda_states_saved_on_8_gpus_restore_where_4_are_visible(monkeypatch):
    calls: list[tuple[int, int]] = []

    def set_state(state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 4:
            raise IndexError(f"device {index} is not visible")
        calls.append((index, int(state[0])))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_state)  # what set_rng_state_all calls
    seed_mod.seed_everything(0)
    state = {
        "python": list(random.getstate()[1]) + [-1],
        "python_version": random.getstate()[0],
        "numpy": __import__("numpy").random.get_state()[1].tolist(),
        "numpy_pos": 0,
        "torch": torch.get_rng_state(),
        "cuda": [torch.full((4,), i, dtype=torch.uint8) for i in range(8)],  # saved where 8 GPUs were visible
        "cuda_own": torch.full((4,), 6, dtype=torch.uint8),  # the saving rank's device was cuda:6
    }
    seed_mod.set_rng_state(state)
    # every visible device gets its saved state, then this rank's device (cuda:2) gets the rank's own
    assert calls == [(0, 0), (1, 1), (2, 2), (3, 3), (2, 6)]
