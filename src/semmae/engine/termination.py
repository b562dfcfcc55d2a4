"""SIGTERM (what schedulers send before they kill a job) as a request to stop at the next step boundary.

Every training verb runs its loop inside :func:`sigterm_requests`: SIGTERM sets a flag instead of killing the
process; the loop checks :meth:`Termination.agreed` after each optimiser step, writes its own resumable checkpoint
at that step and ends through :func:`stopped` (one line naming the checkpoint, then ``KeyboardInterrupt``: the CLI
prints ``interrupted`` and exits 130, as after Ctrl-C). ``--resume auto`` continues from that checkpoint.

A scheduler signals the whole process group: the DataLoader workers die of the same SIGTERM and the loader raises a
``RuntimeError`` in the main process. :meth:`Termination.batches` takes that, once SIGTERM has arrived, for the end
of the data: the loop stops at the step it reached.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import torch

from semmae.utils import distributed as du
from semmae.utils.seed import set_rng_state

T = TypeVar("T")


class Termination:
    """Whether SIGTERM arrived in this process (:attr:`requested`), and the ranks' agreement on it."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum=None, frame=None) -> None:
        self.requested = True

    def agreed(self, device: torch.device | str = "cpu", sync: bool = True) -> bool:
        """Whether SIGTERM arrived on any rank. Alone, this process's flag; under torchrun one small all-reduce
        when ``sync`` (call it where every rank is, e.g. after each optimiser step), else False: every rank stops at
        the same step. Collective under torchrun when ``sync``."""
        if not du.is_dist():
            return self.requested
        if not sync:
            return False
        flag = torch.tensor(float(self.requested), device=device)
        return bool(du.all_reduce_sum(flag).item() > 0)

    def batches(self, loader: Iterable[T]) -> Iterator[T]:
        """``loader``'s items; once SIGTERM has arrived, a loader whose workers died of it (a ``RuntimeError``)
        just ends."""
        items = iter(loader)
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except RuntimeError:
                if not self.requested:
                    raise
                return
            yield item


@contextlib.contextmanager
def sigterm_requests() -> Iterator[Termination]:
    """A :class:`Termination` whose flag SIGTERM sets for as long as the block runs; the previous handler is put
    back after it. Outside the main thread (where Python delivers signals) nothing is installed."""
    term = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield term
        return
    previous = signal.signal(signal.SIGTERM, term.request)
    try:
        yield term
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped(verb: str, where: str, checkpoint: str | Path | None, is_main: bool = True) -> NoReturn:
    """End a run stopped by SIGTERM as Ctrl-C ends one, once its checkpoint at ``where`` (``"step 12"``) is
    written: one line naming it (main process), then ``KeyboardInterrupt`` (the CLI's exit 130)."""
    if is_main:
        print(
            f"semmae {verb}: SIGTERM: stopped at {where} with checkpoint {checkpoint}; "
            "rerun with --resume auto to continue",
            flush=True,
        )
    raise KeyboardInterrupt


def replayed(items: Iterable[T], skip: int, rng: dict | None = None) -> Iterator[T]:
    """``items`` from the ``skip``-th on, for a run resumed in the middle of an epoch: the items before are loaded
    again and passed over (with the epoch's loader generator and RNG restored, they draw what they drew before), then
    ``rng`` (:func:`semmae.utils.seed.rng_state` where the run stopped, or None) is put back, before the next item is
    loaded: the rest of the epoch sees the draws of a run never stopped, the training steps' own included."""
    items = iter(items)
    for _ in itertools.islice(items, skip):
        pass
    if rng is not None:
        set_rng_state(rng)
    yield from items
