"""Multi-process and crash tests (subprocesses): a 2-rank gloo run matches 1 rank with the same global batch,
and a run SIGKILLed mid-epoch then resumed logs the same losses as an uninterrupted one."""

from __future__ import annotations

import signal

import pytest
import torch
from _helpers import logged_losses, run_killed_at, run_torchrun

from semmae.cli import main
from semmae.engine.checkpoint import CheckpointManager
from semmae.utils.run_logger import read_log

pytestmark = pytest.mark.slow


def test_two_gloo_ranks_match_one_rank_with_same_global_batch(engine_images, tmp_path, micro_args):
    common = [
        "--masking",
        "random",
        "--epochs",
        "2",
        "--num-workers",
        "0",
        "--batch-size",
        "2",
        "--ckpt-every",
        "0",
    ]
    one = tmp_path / "one"
    assert main(micro_args(engine_images, one, *common, "--accum-iter", "2")) == 0
    two = tmp_path / "two"
    res = run_torchrun(micro_args(engine_images, two, *common, "--device", "cpu"))
    assert res.returncode == 0, res.stderr[-3000:]
    l1, l2 = logged_losses(one), logged_losses(two)
    assert sorted(l1) == sorted(l2) == list(range(1, 9))  # 16 images / global batch 4 = 4 steps x 2 epochs
    for s in l1:
        assert l2[s] == pytest.approx(l1[s], rel=1e-4, abs=1e-5), s
    c1 = torch.load(CheckpointManager(one).latest(), weights_only=True)
    c2 = torch.load(CheckpointManager(two).latest(), weights_only=True)
    assert c2["sampler"]["effective_batch"] == c1["sampler"]["effective_batch"] == 4
    assert len(c2["rng"]) == 2 and len(c1["rng"]) == 1
    for k, v in c1["model"].items():
        torch.testing.assert_close(c2["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(engine_images, tmp_path, micro_args):
    # 4 steps per epoch, 3 epochs; checkpoints every 3 steps and at epoch ends: ..., 8, 9, 12
    common = ["--masking", "block", "--epochs", "3", "--ckpt-every", "3", "--keep-last", "10"]
    ref = tmp_path / "ref"
    assert main(micro_args(engine_images, ref, *common, "--num-workers", "0")) == 0

    run = tmp_path / "run"
    argv = micro_args(engine_images, run, *common, "--num-workers", "2")
    res = run_killed_at(11, argv)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    mgr = CheckpointManager(run)
    assert mgr.latest() == mgr.path_for(9)  # mid-epoch 2 (step_in_epoch 1); steps 10, 11 are lost
    assert max(logged_losses(run)) == 11
    first_try = logged_losses(run)

    assert main([*argv, "--resume", "auto"]) == 0
    log = [r for r in read_log(run / "log.jsonl") if "loss" in r]
    # 10 and 11 are redone after the resume, and logged once: the records past the checkpoint were dropped
    assert [r["step"] for r in log] == list(range(1, 13))
    lr, lu = logged_losses(ref), logged_losses(run)
    assert sorted(lr) == sorted(lu) == list(range(1, 13))
    for s in lr:
        assert lu[s] == pytest.approx(lr[s], rel=1e-5, abs=1e-6), s
    assert lu[10] == pytest.approx(first_try[10], rel=1e-5) and lu[11] == pytest.approx(
        first_try[11], rel=1e-5
    )
    for path in mgr.list():  # every checkpoint is plain data
        assert torch.load(path, weights_only=True)["step"] in (3, 4, 6, 8, 9, 12)
    final_ref = torch.load(CheckpointManager(ref).latest(), weights_only=True)["model"]
    final_run = torch.load(mgr.latest(), weights_only=True)["model"]
    for k, v in final_ref.items():
        torch.testing.assert_close(final_run[k], v, rtol=1e-5, atol=1e-6, msg=k)
