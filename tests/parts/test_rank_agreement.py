"""``semmae parts train`` on 2 gloo ranks: a non-finite loss seen by one rank stops both (the check is agreed
across ranks; a rank that stopped alone would leave the other waiting in DDP's next all-reduce)."""

from __future__ import annotations

import pytest
from _helpers import run_torchrun_code

from .conftest import train_args

pytestmark = pytest.mark.slow

NAN_ON_RANK_1 = """
import os, sys
import torch
from semmae.engine import nonfinite
if os.environ["RANK"] == "1":  # this rank alone sees a non-finite loss
    record = nonfinite.NonFiniteWatch.record
    nonfinite.NonFiniteWatch.record = lambda self, step, loss, grad_norm=None: record(
        self, step, torch.full_like(loss, float("nan")), grad_norm
    )
from semmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_non_finite_part_loss_on_one_rank_stops_both(synth, encoder_ckpt, tmp_path):
    argv = train_args(synth / "train", tmp_path / "parts", encoder_ckpt, "--device", "cpu")
    res = run_torchrun_code(NAN_ON_RANK_1, argv)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    assert text.count("became non-finite") == 2, text[-3000:]  # one line from each rank
