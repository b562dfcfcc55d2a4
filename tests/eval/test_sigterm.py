"""SIGTERM (what schedulers send) during ``semmae linprobe --mode full`` and ``semmae finetune``: a checkpoint at
the step where the run stops, one line naming it, exit 130 as after Ctrl-C, and ``--resume auto`` finishes the run
(issue 29); the same with the signal sent to the whole process group from outside, loader workers running, and
while ``knn`` / ``linprobe --mode fast`` cache features (issue 37)."""

from __future__ import annotations

import pytest
import torch
from _helpers import run_killed_at, run_torchrun, run_torchrun_code, subprocess_env
from _scheduler_kill import assert_one_clean_line, run_scheduler_killed

from semmae.utils.run_logger import read_log

from .test_commands import COMMON, full_linprobe_argv


def _cli(argv: list[str]) -> int:
    """``semmae ARGV`` in a subprocess with the killed run's environment (one thread: the same float sums)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "semmae.cli", *argv]
    return subprocess.run(cmd, capture_output=True, timeout=240, env=subprocess_env()).returncode


def _linprobe(tiny_data, tiny_ckpt, out):
    return [
        *full_linprobe_argv(tiny_data, tiny_ckpt, out),
        "--epochs",
        "2",
        "--batch-size",
        "4",  # 16 images: 4 steps an epoch
    ]


def test_linprobe_sigterm_mid_epoch_resumes_at_the_step(tiny_data, tiny_ckpt, tmp_path):
    out = tmp_path / "killed"
    argv = _linprobe(tiny_data, tiny_ckpt, out)
    res = run_killed_at(0, argv, signal="SIGTERM")  # after epoch 0's record: stops after epoch 1's first step
    assert res.returncode == 130, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if "SIGTERM" in line]
    assert lines == [
        f"semmae linprobe: SIGTERM: stopped at epoch 1 step 1/4 with checkpoint {out / 'checkpoint.pth'}; "
        "rerun with --resume auto to continue"
    ]
    assert "interrupted" in res.stderr
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (
        state["kind"] == "linprobe" and state["epoch"] == 1 and state["step_in_epoch"] == 1
    )  # epochs finished
    assert _cli([*argv, "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "train_loss" in r] == [0, 1]
    # the resumed run continued from the step: the heads are those of a run never stopped
    whole = tmp_path / "whole"
    assert _cli(_linprobe(tiny_data, tiny_ckpt, whole)) == 0
    a = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(whole / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def _finetune(tiny_data, tiny_ckpt, out):
    return [
        "finetune",
        "--config",
        "eval/finetune_cpu_tiny",
        "--data",
        str(tiny_data),
        "--checkpoint",
        str(tiny_ckpt),
        "--epochs",
        "2",
        "--out",
        str(out),
        "--ema",
        *COMMON,
        "--batch-size",
        "4",  # 16 images: 4 steps an epoch
        "--num-workers",
        "1",
    ]


def test_finetune_group_sigterm_mid_epoch_resumes_at_the_step(tiny_data, tiny_ckpt, tmp_path):
    out = tmp_path / "killed"
    argv = _finetune(tiny_data, tiny_ckpt, out)
    # to the whole process group, the loader's worker included, as a scheduler does; the run's start record is
    # logged at step 0: the run stops after epoch 0's first step
    res = run_killed_at(0, argv, signal="SIGTERM", group=True)
    assert res.returncode == 130, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if "SIGTERM" in line]
    assert lines == [
        f"semmae finetune: SIGTERM: stopped at epoch 0 step 1/4 with checkpoint {out / 'checkpoint.pth'}; "
        "rerun with --resume auto to continue"
    ]
    assert "interrupted" in res.stderr
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert state["epoch"] == 0 and state["step_in_epoch"] == 1
    assert _cli([*argv, "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "train_loss" in r] == [1, 2]
    # the resumed run continued from the step (the epoch's order and augmentations): a run never stopped
    whole = tmp_path / "whole"
    assert _cli(_finetune(tiny_data, tiny_ckpt, whole)) == 0
    a = torch.load(out / "checkpoint.pth", weights_only=True)
    b = torch.load(whole / "checkpoint.pth", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in b["ema"])


RANK0_KILLER = """
import os, signal, sys
from semmae.utils import run_logger
_log = run_logger.RunLogger.log
def log(self, step, **kw):
    _log(self, step, **kw)
    if step == 0 and os.environ.get("RANK") == "0":
        os.kill(os.getpid(), signal.SIGTERM)  # rank 0 only: the ranks must agree to stop together
run_logger.RunLogger.log = log
from semmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "check_every, where, saved",
    [("1", "epoch 0 step 1/2", (1, 0, 1)), ("20", "the end of epoch 0", (2, 1, 0))],
    ids=["every-step", "epoch-end"],
)
def test_finetune_sigterm_on_one_rank_stops_both_at_the_same_step(
    tiny_data, tiny_ckpt, tmp_path, check_every, where, saved
):
    """The ranks agree on a stop every --check-every steps and at epoch ends (the step trainer's policy: no
    all-reduce after every step); both stop at the same step, with one checkpoint."""
    out = tmp_path / "killed"
    # 2 ranks x 4: 2 steps an epoch
    argv = [*_finetune(tiny_data, tiny_ckpt, out), "--num-workers", "0", "--check-every", check_every]
    res = run_torchrun_code(RANK0_KILLER, argv)
    assert res.returncode != 0 and f"SIGTERM: stopped at {where} " in res.stdout, res.stderr[-3000:]
    assert res.stdout.count("SIGTERM") == 1
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == saved
    res = run_torchrun(["finetune", *argv[1:], "--resume", "auto"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in read_log(out / "log.jsonl") if "train_loss" in r] == [1, 2]


# ------------------------------------------------ a scheduler's SIGTERM to the whole process group (issue 37, item 6)
def test_linprobe_group_sigterm_mid_step_with_workers_resumes_at_the_step(tiny_data, tiny_ckpt, tmp_path):
    """SIGTERM from outside to the process group, loader workers included, in the middle of a step: that step
    finishes, a checkpoint there, one line, exit 130; the resumed run's heads are those of a run never stopped."""
    out = tmp_path / "killed"
    argv = [*_linprobe(tiny_data, tiny_ckpt, out), "--num-workers", "2"]
    res = run_scheduler_killed(argv, "step", at=1)
    assert_one_clean_line(res, "linprobe")
    assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr
    assert [line for line in res.stdout.splitlines() if "SIGTERM" in line] == [
        f"semmae linprobe: SIGTERM: stopped at epoch 0 step 2/4 with checkpoint {out / 'checkpoint.pth'}; "
        "rerun with --resume auto to continue"
    ]
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (2, 0, 2)
    assert _cli([*argv, "--resume", "auto"]) == 0
    whole = tmp_path / "whole"  # workers too: a new pool each epoch, seeded from the loader's generator
    assert _cli([*_linprobe(tiny_data, tiny_ckpt, whole), "--num-workers", "2"]) == 0
    a = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(whole / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("verb", ["knn", "linprobe-fast"])
def test_group_sigterm_while_caching_features_is_one_line_and_130(tiny_data, tiny_ckpt, tmp_path, verb):
    out = tmp_path / "run"
    mode = ["knn"] if verb == "knn" else ["linprobe", "--mode", "fast"]
    argv = [*mode, "--train", str(tiny_data / "train"), "--val", str(tiny_data / "val")]
    argv += [
        "--checkpoint",
        str(tiny_ckpt),
        "--out",
        str(out),
        *COMMON,
        "--batch-size",
        "4",
        "--num-workers",
        "2",
    ]
    res = run_scheduler_killed(argv, "features", at=2)  # at the train features' second batch
    assert_one_clean_line(res, mode[0])
    written = sorted(p.name for p in out.iterdir())
    assert "results.json" not in written and "features.pt" not in written
    assert not [name for name in written if name.endswith(".tmp")]  # nothing half-written
