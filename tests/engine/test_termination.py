"""The shared SIGTERM mechanism (:mod:`semmae.engine.termination`) without a training run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from semmae.engine import termination
from semmae.engine.termination import (
    Termination,
    interrupting_sigterm,
    replayed,
    sigterm_received,
    sigterm_requests,
    stopped,
    worker_death,
)
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


# ------------------------------------------------------------------------- a scheduler's SIGTERM (issue 37, item 6)
def test_pytorchs_messages_for_a_dead_worker_are_recognised():
    for text in (
        "DataLoader worker (pid 4242) is killed by signal: Terminated. ",  # its SIGCHLD handler
        "DataLoader worker (pid 4242) exited unexpectedly with exit code 1. Details are lost ...",
        "DataLoader worker (pid(s) 4242, 4243) exited unexpectedly",  # the loader's own check
    ):
        assert worker_death(RuntimeError(text)), text
    assert not worker_death(RuntimeError("CUDA out of memory"))
    assert not worker_death(ValueError("DataLoader worker (pid 1) is killed by signal: Terminated."))
    wrapped = KeyError("batch")
    wrapped.__context__ = RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed.")
    assert worker_death(wrapped)


class _Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor([i])


def _kill_workers_from_outside(loader_iter):
    """SIGTERM to the loader's workers from another process (as a scheduler sends it: PyTorch's workers exit
    quietly only when their parent signals them); returns once they are dead."""
    pids = [w.pid for w in loader_iter._workers]
    code = f"import os, signal\nfor pid in {pids}: os.kill(pid, signal.SIGTERM)"
    subprocess.run([sys.executable, "-c", code], check=True)
    for pid in pids:  # dead, not reaped (as nobody reaps them in a run)
        deadline = time.monotonic() + 10
        while (info := os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert info.si_code == os.CLD_KILLED and info.si_status == signal.SIGTERM


def _the_persistent_iterator(loader):
    next(iter(loader))  # start the workers (persistent: the loader keeps its iterator)
    return loader._iterator


@pytest.mark.parametrize("sigterm", [True, False], ids=["after-sigterm", "no-sigterm"])
def test_a_worker_killed_mid_step_raises_nothing_until_the_next_batch(sigterm, monkeypatch):
    """PyTorch's SIGCHLD handler would raise in the middle of the step; inside sigterm_requests the death is
    looked at where the next batch is asked for: after SIGTERM the data ends there (and the workers are shut
    down), without it PyTorch's error comes there."""
    monkeypatch.setattr(termination, "SIGTERM_GRACE_S", 0.2)
    loader = torch.utils.data.DataLoader(_Slow(), batch_size=2, num_workers=2, persistent_workers=True)
    with sigterm_requests() as term:
        it = _the_persistent_iterator(loader)
        stream = term.batches(loader)
        first = next(stream)
        _kill_workers_from_outside(it)
        if sigterm:
            os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(50):  # the rest of the step: Python code that a SIGCHLD-raised error would interrupt
            time.sleep(0.01)
        assert first.shape == (2, 1)
        if sigterm:
            # the loader may still hand out batches its workers loaded before they died; then it ends
            assert len(list(stream)) < len(loader)
            assert it._shutdown and loader._iterator is None  # the workers were shut down
        else:
            with pytest.raises(RuntimeError, match="killed by signal: Terminated"):
                next(stream)
            it._shutdown_workers()
    assert signal.getsignal(signal.SIGTERM) is not term.request


def test_a_stopped_run_shuts_its_loaders_down_as_the_block_ends():
    loader = torch.utils.data.DataLoader(_Slow(), batch_size=2, num_workers=1, persistent_workers=True)
    with sigterm_requests() as term:
        stream = term.batches(loader)
        next(stream)  # the run's stream stays open (a run-wide iterator, as pretrain's)
        it = loader._iterator
        term.request()
    assert it._shutdown and loader._iterator is None


def test_sigterm_outside_a_training_loop_interrupts_once_and_a_forked_child_dies_of_it():
    previous = signal.getsignal(signal.SIGTERM)
    with interrupting_sigterm():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # delivered here
        assert sigterm_received()
        os.kill(os.getpid(), signal.SIGTERM)  # a second one (SLURM repeats it) leaves the clean-up alone
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:  # a child that inherited the handler: it dies of SIGTERM, as by default
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous and not sigterm_received()


def test_the_cli_ends_a_command_stopped_by_sigterm_with_one_line_and_130(capsys, monkeypatch):
    from semmae.cli import guard

    def caching():  # a feature cache's loop when SIGTERM arrives
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    assert guard("semmae knn", caching) == 130
    assert capsys.readouterr().err == (
        "semmae knn: interrupted by SIGTERM (checkpoints already written are kept)\n"
    )

    # the scheduler reached a loader worker first: PyTorch's error, then this process's own SIGTERM
    def worker_first():
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")

    assert guard("semmae knn", worker_first) == 130
    assert "interrupted by SIGTERM" in capsys.readouterr().err

    # a worker killed by something else (no SIGTERM here) is an error, after a short wait
    monkeypatch.setattr(termination, "SIGTERM_GRACE_S", 0.2)
    monkeypatch.setattr("semmae.cli._write_traceback", lambda e: "nowhere")

    def killed():
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")

    assert guard("semmae knn", killed) == 1
    assert "internal error: RuntimeError: DataLoader worker" in capsys.readouterr().err
