"""SIGTERM (what schedulers send) during ``semmae segment train``: a checkpoint at the iteration where the run
stops, one line naming it, exit 130 as after Ctrl-C, and ``--resume auto`` continues from that iteration, in the
middle of the epoch's shuffled order (issue 29)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _helpers import run_killed_at, subprocess_env

from semmae.utils.run_logger import read_log

from .conftest import segment_train_argv


def _cli(argv: list[str]) -> int:
    """``semmae ARGV`` in a subprocess with the killed run's environment (one thread: the same float sums)."""
    cmd = [sys.executable, "-m", "semmae.cli", *argv]
    return subprocess.run(cmd, capture_output=True, timeout=240, env=subprocess_env()).returncode


def _args(data, out) -> list[str]:
    return segment_train_argv(
        data, out, iters=4, ckpt_every=0, num_vis=0
    )  # 4 training images: 2 iterations an epoch


@pytest.mark.parametrize(
    "kill_at, epoch, step_in_epoch", [(1, 0, 1), (2, 1, 0)], ids=["mid-epoch", "epoch-end"]
)
def test_segment_train_sigterm_resumes_at_the_iteration(fake_ade, tmp_path, kill_at, epoch, step_in_epoch):
    out = tmp_path / "killed"
    argv = _args(fake_ade, out)
    res = run_killed_at(kill_at, argv, signal="SIGTERM")  # epoch 0 has iterations 1 and 2
    assert res.returncode == 130, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if "SIGTERM" in line]
    assert lines == [
        f"semmae segment train: SIGTERM: stopped at iteration {kill_at} with checkpoint {out / 'checkpoint.pth'}; "
        "rerun with --resume auto to continue"
    ]
    assert "interrupted" in res.stderr
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (state["kind"], state["step"], state["epoch"], state["step_in_epoch"]) == (
        "segment",
        kill_at,
        epoch,
        step_in_epoch,
    )
    assert not (out / "seg_final.pth").exists()
    assert _cli([*argv, "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]
    # the resumed run continued from the iteration (the epoch's order and crops): a run never stopped
    whole = tmp_path / "whole"
    assert _cli(_args(fake_ade, whole)) == 0
    a = torch.load(out / "seg_final.pth", weights_only=True)["model"]
    b = torch.load(whole / "seg_final.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
