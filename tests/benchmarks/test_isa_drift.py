"""``benchmarks/isa_drift.py``: the same run on other CPU kernels, compared step by step and by final weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def isa_drift():
    spec = importlib.util.spec_from_file_location("isa_drift", BENCH / "isa_drift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_names_the_first_step_that_differs_and_the_largest_gap(isa_drift):
    base = [(5, 1.0), (10, 0.5), (15, 0.25)]
    assert isa_drift.compare(base, list(base)) == (None, 0.0)
    assert isa_drift.compare(base, [(5, 1.0), (10, 0.5 + 2**-20), (15, 0.0)]) == (10, 0.25)


def test_weight_difference_reads_each_runs_last_checkpoint(isa_drift, tmp_path):
    for run, value in (("a", 1.0), ("b", 1.5)):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / run / "checkpoints" / "ckpt-000000001.pth")
        torch.save(
            {"model": {"w": torch.full((3,), value)}}, tmp_path / run / "checkpoints" / "ckpt-000000002.pth"
        )
    assert isa_drift.weight_difference(tmp_path / "a", tmp_path / "b") == 0.5


def test_smoke_writes_a_whole_table(isa_drift, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        isa_drift.main(["--smoke", "--out", str(tmp_path / "isa"), "--capabilities", "default", "default"])
        == 0
    )
    rows = [ln for ln in (tmp_path / "isa" / "isa-drift.md").read_text().splitlines() if ln.startswith("|")]
    header, rows = rows[0], rows[2:]
    assert len(rows) == 1 and all(r.count("|") == header.count("|") for r in rows)
    assert rows[0].split("|")[3:6] == [" none ", " 0 ", " 0 "]  # the same kernels twice: bit-identical
