"""Lab fixtures: the tiny image folder of the engine tests (``tests/engine/conftest.py``)."""

from __future__ import annotations

import pytest
from _helpers import write_image_folder


@pytest.fixture(scope="session")
def engine_images(tmp_path_factory):
    """16 random 40x40 RGB images in two classes (ImageFolder layout)."""
    return write_image_folder(tmp_path_factory.mktemp("lab") / "imgs", per_class=8, size=40, stem="")
