"""Stages that must share the machine alike (equal-wall-time comparisons): each typed stage config runs in its own
spawned process at the same time, one thread each, its output in its own log file; no argv is built (the child
calls :func:`semmae.cli.run_stage` on the config it was handed)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from semmae.errors import UserError

#: each process's threads: one, without spinning (OpenMP's active wait burns the other process's core)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _run_logged(verb: str, cfg: Any, log: str) -> None:
    """In the child: ``semmae <verb>`` on ``cfg`` with stdout and stderr appended to ``log``."""
    import contextlib
    import sys

    from semmae.cli import guard, run_stage

    with open(log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        code = guard(f"semmae {verb}", lambda: run_stage(verb, cfg))
    sys.exit(code)


def run_side_by_side(jobs: dict[str, tuple[str, Any, Path]]) -> dict[str, float]:
    """Run every ``name: (verb, config, log file)`` at the same time, one thread each; the wall seconds of each.
    ``UserError`` naming the first job that failed (and its log)."""
    saved = {k: os.environ.get(k) for k in ONE_THREAD}
    os.environ.update(ONE_THREAD)  # spawned children read their environment at start
    try:
        ctx = mp.get_context("spawn")
        procs = {}
        for name, (verb, cfg, log) in jobs.items():
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            proc = ctx.Process(target=_run_logged, args=(verb, cfg, str(log)), name=name)
            procs[name] = (proc, time.perf_counter())
            proc.start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    seconds = {}
    for name, (proc, t0) in procs.items():
        proc.join()
        seconds[name] = time.perf_counter() - t0
        if proc.exitcode != 0:
            raise UserError(f"{name} failed (exit {proc.exitcode}); see {jobs[name][2]}")
    return seconds
