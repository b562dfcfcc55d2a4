"""Ranks decide together (2-rank gloo runs): a non-finite loss seen on one rank stops every rank, and a resumed run
continues from rank 0's checkpoint on every rank. A rank deciding alone leaves the others waiting in their next
collective until the NCCL timeout."""

from __future__ import annotations

import pytest
from _helpers import logged_losses, run_torchrun, run_torchrun_code

pytestmark = pytest.mark.slow

NAN_ON_RANK_1 = """
import torch, torch.distributed as dist
from semmae.engine.nonfinite import NonFiniteWatch
from semmae.errors import NonFiniteLossError
dist.init_process_group("gloo")
rank = dist.get_rank()
watch = NonFiniteWatch(torch.device("cpu"))
watch.record(0, torch.tensor(1.0))
watch.record(1, torch.tensor(float("nan") if rank == 1 else 1.0))
watch.record(2, torch.tensor(1.0))
try:
    watch.check(lambda step: f"bad at step {step}")  # as finetune, segment and parts train call it
    print(f"rank {rank} went on", flush=True)
except NonFiniteLossError as e:
    print(f"rank {rank} stopped: {e}", flush=True)
dist.destroy_process_group()
"""


def test_a_non_finite_loss_on_one_rank_stops_every_rank():
    res = run_torchrun_code(NAN_ON_RANK_1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rank 0 stopped: bad at step 1" in res.stdout and "rank 1 stopped: bad at step 1" in res.stdout
    assert "went on" not in res.stdout


RANK_1_SEES_NO_CHECKPOINT = """
import os, sys
from semmae.engine import trainer
if os.environ["RANK"] == "1":  # a run folder this rank cannot see (not shared between nodes)
    trainer.find_resume = lambda *a, **k: None
from semmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_every_rank_resumes_from_rank_0s_checkpoint(engine_images, tmp_path, micro_args):
    common = ["--masking", "random", "--num-workers", "0", "--batch-size", "2", "--device", "cpu"]
    out = tmp_path / "run"
    first = run_torchrun(micro_args(engine_images, out, *common, "--epochs", "2", "--max-steps", "4"))
    assert first.returncode == 0, first.stderr[-3000:]
    res = run_torchrun_code(
        RANK_1_SEES_NO_CHECKPOINT,
        micro_args(engine_images, out, *common, "--epochs", "2", "--resume", "auto"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout and "at step 4" in res.stdout
    assert sorted(logged_losses(out)) == list(range(1, 9))  # steps 5..8 continue the first 4, no gap
