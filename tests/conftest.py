"""Shared fixtures: tiny generated images only (tests never read ../shared/data)."""

from __future__ import annotations

import pytest
import torch
from _helpers import write_image_folder

torch.set_num_threads(2)


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
