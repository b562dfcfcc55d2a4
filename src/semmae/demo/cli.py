"""``semmae demo``: the whole paper end to end on the built-in synthetic dataset, with a report."""

from __future__ import annotations

from semmae.config import add_verb
from semmae.demo.config import DemoConfig


def run_demo(cfg: DemoConfig) -> int:
    from semmae.demo.pipeline import Demo

    Demo(cfg).run()
    return 0


def register(sub) -> None:
    add_verb(
        sub,
        "demo",
        DemoConfig,
        run_demo,
        "The whole paper end to end on the built-in synthetic dataset, with a report",
        "Generate the synthetic part dataset, bootstrap a part encoder, learn parts, pretrain SemMAE and MAE with "
        "the same budget, evaluate both and write report.html / report.md. Rerunning with the same --out skips "
        "finished stages and resumes an interrupted one.",
    )
