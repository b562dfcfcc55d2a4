"""The non-finite watch: the first bad step kept on the device, raised where the loop syncs."""

from __future__ import annotations

import pytest
import torch

from semmae.engine.nonfinite import NonFiniteWatch
from semmae.errors import NonFiniteLossError


def test_watch_keeps_the_first_bad_step_and_raises_only_when_checked():
    watch = NonFiniteWatch(torch.device("cpu"))
    watch.record(0, torch.tensor(1.0))
    watch.record(1, torch.tensor(2.0), grad_norm=torch.tensor(3.0))
    watch.check(lambda step: f"bad at {step}")  # all finite: no error
    watch.record(
        2, torch.tensor(1.0), grad_norm=torch.tensor(float("inf"))
    )  # a non-finite gradient norm counts
    watch.record(3, torch.tensor(float("nan")))
    watch.record(4, torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match="bad at 2"):
        watch.check(lambda step: f"bad at {step}")
    reduced = []
    with pytest.raises(NonFiniteLossError):
        watch.check(lambda step: "x", reduce=lambda t: reduced.append(1) or t)
    assert reduced == [1]  # the all-reduce hook is applied before the read


def test_kept_checkpoint_names_only_a_file_that_exists(tmp_path):
    """Issue 29: a divergence message names the kept checkpoint only when it was written."""
    from semmae.engine.nonfinite import kept_checkpoint

    assert kept_checkpoint(tmp_path / "checkpoint.pth") == "no checkpoint had been written yet"
    assert kept_checkpoint(None) == "no checkpoint had been written yet"
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    assert (
        kept_checkpoint(tmp_path / "checkpoint.pth")
        == f"the last good checkpoint is {tmp_path / 'checkpoint.pth'}"
    )
