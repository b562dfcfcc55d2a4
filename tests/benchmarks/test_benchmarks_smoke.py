"""Every ``benchmarks/*.py`` script runs (issue 41: benchmarks that cannot rot).

The list of scripts is the folder itself (private helpers, ``_*.py``, aside), so a new benchmark fails here until
it has a ``--smoke`` mode: the real code path at tiny sizes on the CPU in seconds, writing only under a temporary
folder (the working directory of the run, or ``--out`` / ``--work`` given here), never into
``benchmarks/results/`` and never reading ``../shared/data`` (its data is generated). A script with its own smoke
test elsewhere is named in :data:`COVERED_ELSEWHERE` with that test file instead.

Scripts run in this process (``runpy``, ``sys.argv`` patched) to save an interpreter and a torch import each, on
one compute thread (fast and steady on a loaded 2-core machine); the environment, torch's thread count,
``sys.path``, the working directory and dynamo's compiled graphs are put back after each. (``bench_omp_wait`` and
``bench_cli_help`` time fresh child processes of their own; ``bootstrap_compare`` spawns its two trainings.)
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

from semmae.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_"))

#: script -> the test file that runs it (checked: the file exists and names the script)
COVERED_ELSEWHERE = {
    "campaign": "tests/benchmarks/test_campaign.py",
    "evidence_figure": "tests/demo/test_evidence_summary.py",
    "gpu_validate": "tests/benchmarks/test_gpu_validate.py",
    "isa_drift": "tests/benchmarks/test_isa_drift.py",
    "mae_reference": "tests/benchmarks/test_mae_reference.py",
    "masking_anatomy": "tests/benchmarks/test_masking_anatomy.py",
    "repro": "tests/benchmarks/test_repro.py",
}

#: arguments after ``--smoke``; ``{tmp}`` is the run's temporary folder (also its working directory)
SMOKE_ARGS: dict[str, list[str]] = {
    "bench_compile": ["--out", "{tmp}/compile.md"],
    "bench_eval": ["--out", "{tmp}/linprobe-modes.md"],
    "bench_pretrain": ["--raw", "{tmp}/raw.json"],
    "bootstrap_compare": ["--work", "{tmp}/work"],
    "linprobe_sweep": ["--out", "{tmp}/sweep"],
    "parts_cub": ["--work", "{tmp}/work", "--out", "{tmp}/parts-cub"],
    "parts_synthetic": ["--work", "{tmp}/work", "--out", "{tmp}/parts-synthetic.json"],
    "refactor_check": ["--work", "{tmp}/work"],
    # every benchmark imported and checked for run(smoke=...); only the cheapest run (the others run here)
    "run_all": ["--only", "masking", "--out", "{tmp}/run_all.md"],
}

#: script -> why its smoke run fails now (a bug outside ``benchmarks/``): a strict xfail, so the fix shows
KNOWN_BROKEN: dict[str, str] = {}  # script -> why its smoke is expected to fail (none today)

SMOKE = [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, raises=UserError, reason=KNOWN_BROKEN[n]))
    if n in KNOWN_BROKEN
    else n
    for n in SCRIPTS
    if n not in COVERED_ELSEWHERE
]


def _exit_code(e: SystemExit) -> int:
    return 0 if e.code is None else e.code if isinstance(e.code, int) else 1


def run_script(name: str, argv: list[str]) -> int:
    """Run ``benchmarks/<name>.py ARGV`` as ``__main__`` in this process, one compute thread (its children too);
    its exit status."""
    path = BENCH / f"{name}.py"
    saved = sys.argv[:], sys.path[:], dict(os.environ), torch.get_num_threads()
    sys.argv = [str(path), *argv]
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(path), run_name="__main__")
        return 0
    except SystemExit as e:
        return _exit_code(e)
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])
        torch.set_num_threads(saved[3])
        if "torch._dynamo" in sys.modules:  # bench_compile: drop the compiled graphs
            torch._dynamo.reset()


@pytest.mark.parametrize("name", SMOKE)
def test_benchmark_smoke(name, tmp_path, monkeypatch, capsys):
    assert "--smoke" in (BENCH / f"{name}.py").read_text(), f"benchmarks/{name}.py has no --smoke mode"
    monkeypatch.chdir(tmp_path)
    argv = ["--smoke", *(a.replace("{tmp}", str(tmp_path)) for a in SMOKE_ARGS.get(name, []))]
    code = run_script(name, argv)
    captured = capsys.readouterr()
    assert code == 0, f"benchmarks/{name}.py --smoke exited {code}:\n{(captured.out + captured.err)[-3000:]}"


def test_every_script_is_smoked_here_or_elsewhere():
    for name, test in COVERED_ELSEWHERE.items():
        assert name in SCRIPTS, f"COVERED_ELSEWHERE names benchmarks/{name}.py, which is gone"
        path = ROOT / test
        assert path.is_file(), f"{test} (the smoke test of benchmarks/{name}.py) does not exist"
        assert name in path.read_text(), f"{test} does not mention {name}"
    smoked = set(SCRIPTS) - set(COVERED_ELSEWHERE)
    assert set(SMOKE_ARGS) | set(KNOWN_BROKEN) <= smoked, "a table above names a script not smoked here"
