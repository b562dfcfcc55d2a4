"""SIGTERM (what schedulers send) during ``semmae parts train``: a checkpoint at the step where the run stops, one
line naming it, exit 130 as after Ctrl-C, and ``--resume auto`` continues from that step (issue 29)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _helpers import run_killed_at, subprocess_env

from semmae.utils.run_logger import read_log

from .conftest import train_args


def _cli(argv: list[str]) -> int:
    """``semmae ARGV`` in a subprocess with the killed run's environment (one thread: the same float sums)."""
    cmd = [sys.executable, "-m", "semmae.cli", *argv]
    return subprocess.run(cmd, capture_output=True, timeout=240, env=subprocess_env()).returncode


@pytest.mark.parametrize(
    "features, workers, group",
    [("cached", "0", False), ("online", "1", True)],
    ids=["cached", "online-group"],
)
def test_parts_train_sigterm_mid_epoch_resumes_at_the_step(
    tmp_path, synth, encoder_ckpt, features, workers, group
):
    extra = ["--features", features, "--num-workers", workers, "--epochs", "2", "--log-every", "1"]
    out = tmp_path / "killed"
    argv = train_args(synth / "train", out, encoder_ckpt, *extra)
    res = run_killed_at(1, argv, signal="SIGTERM", group=group)  # after step 1 of 2 in epoch 1
    assert res.returncode == 130, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if "SIGTERM" in line]
    assert lines == [
        f"semmae parts train: SIGTERM: stopped at step 1 (epoch 1, step 1/2) with checkpoint "
        f"{out / 'checkpoint.pth'}; rerun with --resume auto to continue"
    ]
    assert "interrupted" in res.stderr
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (state["epoch"], state["step"], state["step_in_epoch"]) == (0, 1, 1)
    assert not (
        out / "panels" / "epoch_001.png"
    ).exists()  # an epoch's end (diagnostics, panel) only when it ends
    assert _cli([*argv, "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]
    # the resumed run continued from the step (the epoch's order and crops): a run never stopped
    whole = tmp_path / "whole"
    assert _cli(train_args(synth / "train", whole, encoder_ckpt, *extra)) == 0
    a = torch.load(out / "checkpoint.pth", weights_only=True)
    b = torch.load(whole / "checkpoint.pth", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 4)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


def test_parts_train_sigterm_in_an_epochs_last_step_ends_that_epoch(tmp_path, synth, encoder_ckpt):
    out = tmp_path / "killed"
    argv = train_args(synth / "train", out, encoder_ckpt, "--epochs", "2", "--log-every", "1")
    res = run_killed_at(
        2, argv, signal="SIGTERM"
    )  # the last step of epoch 1: its end (panel, checkpoint) runs
    assert res.returncode == 130, res.stderr[-3000:]
    assert (
        f"SIGTERM: stopped at step 2 (the end of epoch 1) with checkpoint {out / 'checkpoint.pth'}"
        in res.stdout
    )
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (state["epoch"], state["step"], state["step_in_epoch"]) == (1, 2, 0)
    assert (out / "panels" / "epoch_001.png").is_file()
    assert _cli([*argv, "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]
