"""A scheduler's SIGTERM to the whole process group (SLURM, Kubernetes) while DataLoader workers run (issue 37,
item 6): `pretrain` and `bootstrap` stop as after a SIGTERM to the main process alone - the step in progress
finishes, a checkpoint at that step, one line, exit 130, no trace - and `--resume auto` logs the losses of a run
never stopped. Every run is a one-thread subprocess (the same float sums), so the comparison is exact."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _helpers import logged_losses, subprocess_env, write_image_folder
from _scheduler_kill import assert_one_clean_line, run_scheduler_killed

from semmae.engine.checkpoint import CheckpointManager
from semmae.utils.run_logger import read_log

from .conftest import MICRO

BOOT = [
    "--model", "vit_micro_patch8", "--img-size", "32", "--local-size", "16", "--local-crops", "2",
    "--out-dim", "64", "--head-hidden-dim", "32", "--head-bottleneck-dim", "16", "--precision", "fp32",
    "--no-progress", "--log-every", "1", "--batch-size", "4", "--warmup-epochs", "1",
    "--warmup-teacher-temp-epochs", "1", "--freeze-last-layer", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 random 32x32 images: 4 steps an epoch at batch 4."""
    return write_image_folder(tmp_path_factory.mktemp("group") / "imgs", per_class=8, size=32, stem="")


def _argv(verb: str, data, out, workers: str) -> list[str]:
    if verb == "pretrain":
        return ["pretrain", "--data", str(data), "--out", str(out), *MICRO, "--masking", "random"] + [
            "--epochs", "1", "--num-workers", workers,
        ]  # fmt: skip
    return [
        "bootstrap",
        "--data",
        str(data),
        "--out",
        str(out),
        *BOOT,
        "--epochs",
        "1",
        "--num-workers",
        workers,
    ]


def _cli(argv: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "semmae.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=subprocess_env())


@pytest.mark.parametrize("verb", ["pretrain", "bootstrap"])
def test_group_sigterm_mid_step_stops_cleanly_and_resumes_exactly(images, tmp_path, verb):
    out = tmp_path / "killed"
    argv = _argv(verb, images, out, "2")
    # SIGTERM to the group in the middle of step 1 (index): the workers die while the main process trains
    res = run_scheduler_killed(argv, "step", at=1)
    assert_one_clean_line(res, verb)
    assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr
    ckpt = CheckpointManager(out).path_for(2)
    assert [line for line in res.stdout.splitlines() if "SIGTERM" in line] == [
        f"semmae {verb}: SIGTERM: stopped at step 2 with checkpoint {ckpt}; rerun with --resume auto to continue"
    ]
    assert [p.name for p in CheckpointManager(out).list()] == [ckpt.name]
    assert max(logged_losses(out)) == 2

    resumed = _cli([*argv, "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpt} at step 2" in resumed.stdout
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]
    whole = tmp_path / "whole"
    done = _cli(_argv(verb, images, whole, "0"))  # never stopped (and workers 0 vs 2 load the same batches)
    assert done.returncode == 0, done.stderr[-3000:]
    assert logged_losses(out) == logged_losses(whole)


def test_group_sigterm_before_the_training_loop_is_one_line_and_130(images, tmp_path):
    out = tmp_path / "run"
    res = run_scheduler_killed(_argv("pretrain", images, out, "2"), "startup")
    assert_one_clean_line(res, "pretrain")
    assert not out.exists()  # nothing was written yet
