"""Helpers shared by tests (importable as ``_helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image


def write_image_folder(root, classes=("a", "b"), per_class=3, size=32, seed=0, ext="png", stem="img"):
    """Write a tiny ImageFolder tree of random RGB images (``<class>/<stem><i>.<ext>``); returns the root."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{stem}{i}.{ext}")
    return root


def subprocess_env() -> dict[str, str]:
    """Environment of a CLI subprocess: one compute thread (float sums in a fixed order), unbuffered output."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def logged_losses(out) -> dict[int, float]:
    """The loss a run logged at each step (``out/log.jsonl``)."""
    from semmae.utils.rundir import read_log

    return {r["step"]: r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r}


def run_torchrun(argv: list[str], nproc: int = 2, timeout: int = 240):
    """``torchrun --standalone --nproc-per-node N -m semmae.cli ARGV`` on gloo; returns the CompletedProcess."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "semmae.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


KILLER = """
import os, signal, sys
from semmae.utils import rundir
_log = rundir.RunLogger.log
def log(self, step, **kw):
    _log(self, step, **kw)
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
rundir.RunLogger.log = log
from semmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_killed_at(step: int, argv: list[str], timeout: int = 240):
    """``semmae ARGV`` in a subprocess that SIGKILLs itself right after logging ``step``; the CompletedProcess."""
    import subprocess
    import sys

    code = KILLER.format(kill_at=step)
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


TQDM_BAR = re.compile(r"\d+/\d+ \[\d\d:\d\d<")  # a tqdm progress line (it/s or s/it)


def one_error_line(capsys, *needles):
    """The captured stderr, tqdm bars aside, is exactly one line holding every needle; returns it."""
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = "\n".join(line for line in lines if line.strip() and not TQDM_BAR.search(line))
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def pretrain_checkpoint(path, mae, **config) -> dict:
    """A checkpoint in `semmae pretrain`'s layout (every key a resume needs)."""
    ckpt = {
        "model": mae.state_dict(),
        "model_config": mae.config_dict(),
        "optimizer": {},
        "scaler": {},
        "epoch": 1,
        "step": 4,
        "config": dict(config),
        "rng": {},
        "sampler": {},
    }
    torch.save(ckpt, path)
    return ckpt


def run_torchrun_code(code: str, argv: list[str] = (), nproc: int = 2, timeout: int = 240):
    """``torchrun --standalone --nproc-per-node N python -c CODE ARGV`` on gloo; returns the CompletedProcess."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    cmd += ["--nproc-per-node", str(nproc), "--no-python", sys.executable, "-c", code, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env())
