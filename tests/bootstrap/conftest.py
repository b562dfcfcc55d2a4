"""Bootstrap fixtures: a tiny image folder and the arguments of a micro self-distillation run."""

from __future__ import annotations

import pytest
from _helpers import write_image_folder

MICRO = [
    "--model",
    "vit_micro_patch8",
    "--img-size",
    "32",
    "--local-size",
    "16",
    "--local-crops",
    "2",
    "--out-dim",
    "64",
    "--head-hidden-dim",
    "32",
    "--head-bottleneck-dim",
    "16",
    "--precision",
    "fp32",
    "--no-progress",
    "--log-every",
    "1",
    "--batch-size",
    "4",
    "--warmup-epochs",
    "1",
    "--warmup-teacher-temp-epochs",
    "1",
    "--freeze-last-layer",
    "0",
    "--num-workers",
    "0",
]


@pytest.fixture(scope="session")
def boot_images(tmp_path_factory):
    """16 random 40x40 RGB images in two classes (ImageFolder layout)."""
    return write_image_folder(tmp_path_factory.mktemp("boot") / "imgs", per_class=8, size=40, stem="")


@pytest.fixture(scope="session")
def boot_args():
    """``boot_args(data, out, *extra)`` -> argv for ``semmae.cli.main`` of a micro bootstrap run."""

    def make(data, out, *extra: str) -> list[str]:
        return ["bootstrap", "--data", str(data), "--out", str(out), *MICRO, *extra]

    return make
