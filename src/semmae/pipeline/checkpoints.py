"""The checkpoints a chained pipeline hands from one stage to the next."""

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


def part_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint ``semmae parts train`` wrote into ``run_dir``; ``UserError`` if there is none."""
    from semmae.parts.train import CHECKPOINT_NAME

    ckpt = Path(run_dir) / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise UserError(f"part learning wrote no checkpoint at {ckpt}")
    return ckpt
