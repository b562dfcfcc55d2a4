"""The checkpoint a finished run folder hands to the next stage of a chain (the demo, the reproduction harness)."""

from __future__ import annotations

from pathlib import Path

from semmae.errors import UserError
from semmae.utils.io import checkpoint_file


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a finished run folder wrote last (:func:`semmae.utils.io.checkpoint_file`, the one reading of
    "file or run folder"); ``UserError`` if the folder holds none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no checkpoint in {run_dir}: the folder does not exist")
    return checkpoint_file(run_dir)
