"""``benchmarks/gpu_validate.py --smoke``: the prepared GPU validation script runs end to end on the CPU at tiny
sizes (every section but the compiled one, which takes minutes to compile on a CPU) and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import subprocess_env

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_gpu_validate_smoke_runs_every_section(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(BENCH / "gpu_validate.py"),
        "--smoke",
        "--skip",
        "compiled",
        "--budget-s",
        "1e9",
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env={**subprocess_env(), "OUT": str(out)}
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / "gpu-validate.json").read_text())
    sections = {r["section"] for r in report["rows"]}
    assert {"env", "masking", "augment", "held", "e2e", "resume", "b8", "fp16", "profile"} <= sections
    assert not [r for r in report["rows"] if r["name"] == "FAILED"]
    resume = next(r for r in report["rows"] if r["section"] == "resume" and r["ok"] is not None)
    assert resume["ok"], resume
    assert (out / "gpu-validate.md").is_file() and (out / "profile.txt").is_file()
