"""The shared SIGTERM mechanism (:mod:`semmae.engine.termination`) without a training run."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from semmae.engine.termination import Termination, replayed, sigterm_requests, stopped
from semmae.utils.seed import rng_state


def test_sigterm_sets_the_flag_and_the_previous_handler_comes_back():
    previous = signal.getsignal(signal.SIGTERM)
    with sigterm_requests() as term:
        assert not term.agreed()
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode: the process lives on
        assert term.requested and term.agreed()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_loader_whose_workers_died_ends_only_after_sigterm():
    def dying():
        yield 1
        raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Terminated.")

    term = Termination()
    with pytest.raises(RuntimeError):
        list(term.batches(dying()))  # no SIGTERM: a real error
    term.request()
    assert list(term.batches(dying())) == [1]


def test_replayed_draws_what_a_run_never_stopped_draws():
    def epoch():  # each item draws from the RNG, as a transform in the main process does
        for _ in range(4):
            yield torch.rand(1).item()

    torch.manual_seed(0)
    start = rng_state()
    whole = []
    for i, x in enumerate(epoch()):
        whole.append(x)
        whole.append(torch.rand(1).item())  # the step's own draw (dropout)
        if i == 1:
            at_stop = rng_state()
    torch.set_rng_state(start["torch"])
    resumed = []
    for x in replayed(epoch(), 2, at_stop):
        resumed.append(x)
        resumed.append(torch.rand(1).item())
    assert resumed == whole[4:]


def test_stopped_names_the_checkpoint_and_ends_like_ctrl_c(capsys):
    with pytest.raises(KeyboardInterrupt):
        stopped("finetune", "epoch 1 step 2/4", "out/checkpoint.pth")
    assert capsys.readouterr().out == (
        "semmae finetune: SIGTERM: stopped at epoch 1 step 2/4 with checkpoint out/checkpoint.pth; "
        "rerun with --resume auto to continue\n"
    )
