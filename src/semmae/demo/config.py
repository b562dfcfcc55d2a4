"""``DemoConfig``: the flags of ``semmae demo``. No torch here: ``semmae demo --help`` reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semmae.config import option
from semmae.data.config import STYLES
from semmae.demo.budgets import BUDGETS
from semmae.errors import UserError


@dataclass
class DemoConfig:
    """``semmae demo`` settings."""

    out: str = option("semmae_demo", "output folder (rerun with the same folder to resume)")
    budget: str = option(
        "small",
        "small: ~3.5 min on 2 idle CPU cores; micro: smoke run; medium: more data, epochs and seeds",
        choices=tuple(BUDGETS),
    )
    device: str = option("auto", "auto | cpu | cuda")
    seed: int = option(0, "first seed; SemMAE and MAE use seeds seed .. seed+n-1")
    encoder: str = option(
        "", "timm architecture of --encoder-checkpoint (if the checkpoint does not tell it)"
    )
    encoder_checkpoint: str = option(
        "",
        "iBOT / DINO / MAE weights (or run folder) for part learning; default: bootstrap one offline",
        checkpoint=True,
    )
    style: str = option(
        "class",
        "synthetic set style (`semmae data synth --style`): class = colours name parts and classes; "
        "random = only shape and layout do",
        choices=STYLES,
    )
    num_workers: int = option(2, "DataLoader workers per stage")
    overwrite: bool = option(
        False, "delete the demo run already in --out and start again (a rerun otherwise resumes it)"
    )
    progress: bool = option(True, "progress bars inside stages")

    def validate(self) -> None:
        if self.encoder_checkpoint and not Path(self.encoder_checkpoint).is_file():
            raise UserError(f"--encoder-checkpoint {self.encoder_checkpoint} does not exist")
        if self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0, got {self.num_workers}")
