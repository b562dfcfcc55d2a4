"""``semmae ARGV`` stopped as a scheduler stops a job (issue 37, item 6): SIGTERM to its whole process group, sent
by another process. (``_helpers.run_killed_at(..., group=True)`` signals the group from the main process itself,
and PyTorch's loader workers take a SIGTERM from their parent for a quiet exit; from anyone else they die of it,
and the main process's SIGCHLD handler then raises wherever the main process is.)"""

from __future__ import annotations

import subprocess
import sys

from _helpers import TQDM_BAR, subprocess_env

KILLER = """
import os, signal, subprocess, sys, time
WHERE, AT = {where!r}, {at}

def scheduler():
    # another process sends SIGTERM to the whole group (this one, the loader workers and itself), as SLURM does
    code = "import os, signal; os.killpg(%d, signal.SIGTERM)" % os.getpgrp()
    subprocess.run([sys.executable, "-c", code])
    time.sleep(1.0)  # the rest of the step: the workers die meanwhile

if WHERE == "step":  # in the middle of optimiser step AT (after its forward, before its backward)
    from semmae.engine import trainer
    _update = trainer.Trainer.gradient_update
    def gradient_update(self, loss, update=True):
        if self.step == AT and not getattr(self, "_signalled", False):
            self._signalled = True
            scheduler()
        return _update(self, loss, update)
    trainer.Trainer.gradient_update = gradient_update
elif WHERE == "features":  # while a command caches features, at its AT-th batch
    from semmae.eval import common
    _features, calls = common.batch_features, []
    def batch_features(*args, **kwargs):
        calls.append(1)
        if len(calls) == AT:
            scheduler()
        return _features(*args, **kwargs)
    common.batch_features = batch_features
elif WHERE == "startup":  # before the training loop (the model is built, nothing is trained)
    from semmae.engine import trainer
    _tools = trainer.Trainer.init_step_tools
    def init_step_tools(self):
        scheduler()
        return _tools(self)
    trainer.Trainer.init_step_tools = init_step_tools
from semmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_scheduler_killed(argv: list[str], where: str, at: int = 0, timeout: int = 240):
    """``semmae ARGV`` in its own session, its process group signalled from outside: ``where="step"`` in the middle
    of optimiser step ``at``, ``"features"`` at the ``at``-th batch of a feature cache, ``"startup"`` before the
    training loop. Returns the CompletedProcess."""
    code = KILLER.format(where=where, at=at)
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        start_new_session=True,
    )


def stderr_lines(res) -> list[str]:
    """The process's stderr lines, tqdm bars aside."""
    lines = res.stderr.replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip() and not TQDM_BAR.search(line)]


def assert_one_clean_line(res, verb: str) -> None:
    """Exit 130 and one line on stderr (no "internal error", no "Exception ignored" trace)."""
    assert res.returncode == 130, res.stderr[-3000:]
    assert stderr_lines(res) == [
        f"semmae {verb}: interrupted by SIGTERM (checkpoints already written are kept)"
    ], res.stderr[-3000:]
