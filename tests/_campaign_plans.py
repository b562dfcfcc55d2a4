"""A campaign plan file on the harness's smoke budget, for the campaign tests (no training runs from it)."""

from __future__ import annotations

from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def write_smoke_plan(path: Path, **fields) -> Path:
    """``path`` as a plan: the smoke preset's budget, 30 synthetic images at 32 px, log. reg. primary, kNN
    secondary, margin 1; ``fields`` give the rest (name, question, arms, baseline, seeds, ...) and override any."""
    budget = yaml.safe_load((BENCH / "repro_presets" / "smoke.yaml").read_text())
    budget.pop("seeds")
    plan = {
        "budget": budget,
        "data": {"kind": "synth", "num_images": 30, "size": 32},
        "primary": "logreg_top1",
        "secondary": ["knn_top1"],
        "margin": 1.0,
        **fields,
    }
    path.write_text(yaml.safe_dump(plan))
    return path
