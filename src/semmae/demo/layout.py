"""A demo run's layout: its config and budget, its folders and seeds, where each pretraining run lives, and the
stages' times - what the stages (:mod:`semmae.demo.pipeline`) fill in and the report (:mod:`semmae.demo.make_report`)
reads."""

from __future__ import annotations

from pathlib import Path

from semmae.demo.budgets import BUDGETS, Budget
from semmae.demo.config import DemoConfig
from semmae.demo.recipe import METHODS


class DemoLayout:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.budget: Budget = BUDGETS[cfg.budget]
        self.out = Path(cfg.out).resolve()
        self.data = self.out / "data"
        self.seeds = [cfg.seed + i for i in range(self.budget.seeds)]
        self.timings: dict[str, float] = {}  # stage -> seconds

    def runs(self) -> list[tuple[str, int, Path]]:
        """(method, seed, run dir) of every pretraining run."""
        return [(m, s, self.out / "pretrain" / f"{m}-seed{s}") for m in METHODS for s in self.seeds]
