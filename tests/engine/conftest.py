"""Engine fixtures: a tiny image folder and the arguments of a micro pretraining run (mae_vit_micro_patch8)."""

from __future__ import annotations

import pytest
from _helpers import write_image_folder

MICRO = [
    "--model",
    "mae_vit_micro_patch8",
    "--img-size",
    "32",
    "--precision",
    "fp32",
    "--no-progress",
    "--vis-every",
    "0",
    "--log-every",
    "1",
    "--batch-size",
    "4",
    "--warmup-epochs",
    "1",
]


@pytest.fixture(scope="session")
def engine_images(tmp_path_factory):
    """16 random 40x40 RGB images in two classes (ImageFolder layout)."""
    return write_image_folder(tmp_path_factory.mktemp("engine") / "imgs", per_class=8, size=40, stem="")


@pytest.fixture
def micro_args():
    """``micro_args(data, out, *extra)`` -> argv for ``semmae.cli.main`` of a micro run."""

    def make(data, out, *extra: str) -> list[str]:
        return ["pretrain", "--data", str(data), "--out", str(out), *MICRO, *extra]

    return make
