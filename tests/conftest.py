"""Shared fixtures: tiny generated images only (tests never read ../shared/data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _helpers import write_image_folder

torch.set_num_threads(2)

#: the experiment package beside the benchmarks (``benchmarks/semmae_lab``, never installed), importable as the
#: scripts see it when run as ``python benchmarks/x.py``
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture
def tiny_folder(tmp_path):
    return write_image_folder(tmp_path / "imgs")


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """A small synthetic part dataset (64 px, 5 classes, train/val, masks), made once per session."""
    from semmae.data.synth import make_synthetic_dataset

    out = tmp_path_factory.mktemp("synth") / "ds"
    make_synthetic_dataset(out, num_images=60, size=64, seed=0, progress=False)
    return out
