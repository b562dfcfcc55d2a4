"""``DemoConfig``: the flags of ``semmae demo``. No torch here: ``semmae demo --help`` reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from semmae.data.config import STYLES
from semmae.demo.budgets import BUDGETS
from semmae.errors import UserError


@dataclass
class DemoConfig:
    """``semmae demo`` settings."""

    out: str = field(
        default="semmae_demo", metadata={"help": "output folder (rerun with the same folder to resume)"}
    )
    budget: str = field(
        default="small",
        metadata={
            "help": "small: ~3.5 min on 2 idle CPU cores; micro: smoke run; medium: more data, epochs and seeds",
            "choices": tuple(BUDGETS),
        },
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    seed: int = field(default=0, metadata={"help": "first seed; SemMAE and MAE use seeds seed .. seed+n-1"})
    encoder: str = field(
        default="",
        metadata={"help": "timm architecture of --encoder-checkpoint (if the checkpoint does not tell it)"},
    )
    encoder_checkpoint: str = field(
        default="",
        metadata={
            "help": "iBOT / DINO / MAE weights (or run folder) for part learning; default: bootstrap one offline",
            "checkpoint": True,
        },
    )
    style: str = field(
        default="class",
        metadata={
            "help": "synthetic set style (`semmae data synth --style`): class = colours name parts and classes; "
            "random = only shape and layout do",
            "choices": STYLES,
        },
    )
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per stage"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "delete the demo run already in --out and start again (a rerun otherwise resumes it)"
        },
    )
    progress: bool = field(default=True, metadata={"help": "progress bars inside stages"})

    def validate(self) -> None:
        if self.encoder_checkpoint and not Path(self.encoder_checkpoint).is_file():
            raise UserError(f"--encoder-checkpoint {self.encoder_checkpoint} does not exist")
        if self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0, got {self.num_workers}")
