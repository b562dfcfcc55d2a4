"""SIGTERM (what schedulers send before they kill a job) as a request to stop at the next step boundary.

Every training verb runs its loop inside :func:`sigterm_requests`: SIGTERM sets a flag instead of killing the
process; the loop checks :meth:`Termination.agreed` after each optimiser step, writes its own resumable checkpoint
at that step and ends through :func:`stopped` (one line naming the checkpoint, then ``KeyboardInterrupt``: the CLI
prints ``interrupted`` and exits 130, as after Ctrl-C). ``--resume auto`` continues from that checkpoint.

A scheduler (SLURM, Kubernetes) signals the whole process group: the DataLoader workers die of the same SIGTERM.
PyTorch's SIGCHLD handler would raise ``RuntimeError: DataLoader worker (pid X) is killed by signal: Terminated``
wherever the main process happens to be - in the forward pass, in the middle of an optimiser step. Inside
:func:`sigterm_requests` a SIGCHLD raises nothing: it is noted, and the dead worker is looked at where the loop
asks for its next batch (:meth:`Termination.batches`), between steps, so a step is always taken whole or not at
all. There, and wherever else a loader finds its workers gone, a worker's death once SIGTERM has arrived (or
arrives within :data:`SIGTERM_GRACE_S`: the scheduler may signal the workers first) is the end of the data: the
loop stops at the last step it completed, as a SIGTERM to the main process alone stops it. Any other death of a
worker is PyTorch's error, as before. When the run stops, the loaders' workers are shut down before the process
ends (none is left for the interpreter's exit to find dead and complain about).

Outside a training loop the CLI turns SIGTERM into ``KeyboardInterrupt`` (:func:`interrupting_sigterm`): a run
stopped while it starts or caches features ends with one line and exit 130, and only what is written whole
(atomically) is left.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

#: how long a loader worker's death by SIGTERM waits for the SIGTERM to this process (a scheduler that signals the
#: processes of a job one by one may reach a worker first) before it counts as an error of its own
SIGTERM_GRACE_S = 2.0

#: PyTorch's messages for a DataLoader worker that died: from its SIGCHLD handler ("(pid 12) is killed by signal:
#: Terminated.", "(pid 12) exited unexpectedly with exit code 1") and from the loader ("(pid(s) 12, 13) exited
#: unexpectedly")
_WORKER_DEATH = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? [\d, ]+\) (?:is killed by signal|exited unexpectedly)"
)


def worker_death(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is PyTorch's error for a DataLoader worker that died."""
    return any(isinstance(c, RuntimeError) and _WORKER_DEATH.search(str(c)) for c in _chain(e))


def _died_of_sigterm(e: BaseException) -> bool:
    return any("killed by signal: Terminated" in str(c) for c in _chain(e))


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_of(signum: int) -> NoReturn:
    """Die of ``signum`` as with its default action (a forked child that inherited a handler meant for its parent)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # not reached: SIGTERM's default action ends the process


def _quiet_sigchld(signum: int, frame: Any) -> None:
    """A SIGCHLD handler that raises nothing (while a process stopped by SIGTERM shuts its loaders down)."""


def _torch_sigchld() -> Any:
    """PyTorch's SIGCHLD handler, installed now if no loader has installed it yet, so that a handler put in front of
    it is not wrapped by it later (PyTorch installs it once, at the first loader with workers); None when this
    PyTorch has no such handler."""
    try:
        from torch.utils.data._utils import signal_handling
    except ImportError:  # pragma: no cover - another PyTorch
        return None
    install = getattr(signal_handling, "_set_SIGCHLD_handler", None)
    if install is None:  # pragma: no cover - another PyTorch
        return None
    install()
    return signal.getsignal(signal.SIGCHLD)


def _raise_if_a_worker_died() -> None:
    """PyTorch's check behind its SIGCHLD handler: a ``RuntimeError`` for a loader worker that died."""
    try:
        from torch.utils.data._utils.signal_handling import _error_if_any_worker_fails
    except ImportError:  # pragma: no cover - another PyTorch
        return
    _error_if_any_worker_fails()


def shut_down(loader: Any, items: Any = None) -> None:
    """Shut a loader's worker processes down now: its iterator ``items`` (PyTorch's, or a generator around one) and
    a persistent-workers loader's own iterator. After a SIGTERM, so that no iterator is left for the interpreter's
    exit, where dead workers make PyTorch print an "Exception ignored" traceback."""
    # a generator (this project's DataLoader's iterator, replayed()) lets go of PyTorch's iterator when closed
    close = getattr(items, "close", None)
    if close is not None:
        close()
    for it in (items, getattr(loader, "_iterator", None)):
        stop = getattr(it, "_shutdown_workers", None)
        if stop is not None:
            stop()
    if getattr(loader, "_iterator", None) is not None:
        loader._iterator = None  # a persistent loader would hand the shut iterator out again


class Termination:
    """Whether SIGTERM arrived in this process (:attr:`requested`), and the ranks' agreement on it."""

    def __init__(self) -> None:
        self.requested = False
        self._pid = os.getpid()
        self._child_exited = False  # a SIGCHLD came: a loader worker may have died (looked at between steps)
        self._open: list[tuple[Any, Any]] = []  # (loader, iterator) of each batches() running
        self._listening = False  # its handler is installed (sigterm_requests): SIGTERM can still arrive

    def request(self, signum: int | None = None, frame: Any = None) -> None:
        if signum is not None and os.getpid() != self._pid:  # a forked child: it dies as it would have
            _die_of(signum)
        self.requested = True
        if signum is not None:
            _SIGTERM.received = True

    def child_exited(self, signum: int | None = None, frame: Any = None) -> None:
        """The SIGCHLD handler inside :func:`sigterm_requests`: notes the death, raises nothing in mid-step."""
        self._child_exited = True

    def agreed(self, device: torch.device | str = "cpu", sync: bool = True) -> bool:
        """Whether SIGTERM arrived on any rank. Alone, this process's flag; under torchrun one small all-reduce
        when ``sync`` (call it where every rank is, e.g. after each optimiser step), else False: every rank stops at
        the same step. Collective under torchrun when ``sync``."""
        from semmae.utils import distributed as du

        if not du.is_dist():
            return self.requested
        if not sync:
            return False
        import torch

        flag = torch.tensor(float(self.requested), device=device)
        return bool(du.all_reduce_sum(flag).item() > 0)

    def explains(self, e: BaseException) -> bool:
        """Whether SIGTERM explains ``e``: a loader worker's death once SIGTERM has arrived here. A worker killed by
        SIGTERM before this process got its own waits up to :data:`SIGTERM_GRACE_S` for it."""
        if not worker_death(e):
            return False
        if not self.requested and self._listening and _died_of_sigterm(e) and _in_main_thread():
            deadline = time.monotonic() + SIGTERM_GRACE_S
            while not self.requested and time.monotonic() < deadline:
                time.sleep(0.02)  # the handler runs here
        return self.requested

    def check_workers(self) -> None:
        """Between steps: after a SIGCHLD, PyTorch's error for a loader worker that died, unless SIGTERM explains it
        (then the loader finds out itself whether the batches it needs are there)."""
        if not self._child_exited:
            return
        self._child_exited = False
        try:
            _raise_if_a_worker_died()
        except RuntimeError as e:
            if not self.explains(e):
                raise

    def batches(self, loader: Iterable[T]) -> Iterator[T]:
        """``loader``'s items, a worker's death looked at between them (:meth:`check_workers`). Once SIGTERM has
        arrived, a loader whose workers died of it just ends (where the batch it needs is not loaded already), and
        when this generator ends its workers are shut down."""
        items = iter(loader)
        entry = (loader, items)
        self._open.append(entry)
        try:
            while True:
                self.check_workers()
                try:
                    item = next(items)
                except StopIteration:
                    return
                except RuntimeError as e:
                    if not self.explains(e):
                        raise
                    return
                yield item
        finally:
            if entry in self._open:
                self._open.remove(entry)
                if self.requested:
                    shut_down(loader, items)

    def shut_down_loaders(self) -> None:
        """Shut down the workers of every loader :meth:`batches` is still iterating (a run stopped by SIGTERM)."""
        while self._open:
            shut_down(*self._open.pop())


@contextlib.contextmanager
def sigterm_requests() -> Iterator[Termination]:
    """A :class:`Termination` whose flag SIGTERM sets for as long as the block runs; a SIGCHLD (a loader worker that
    died) raises nothing in the block (:meth:`Termination.check_workers` looks at it between steps). The previous
    handlers are put back after it; a block left after SIGTERM first shuts down the loaders it was iterating. Outside
    the main thread (where Python delivers signals) nothing is installed."""
    term = Termination()
    if not _in_main_thread():
        yield term
        return
    torch_handler = _torch_sigchld()
    previous = signal.signal(signal.SIGTERM, term.request)
    previous_chld = signal.signal(signal.SIGCHLD, term.child_exited) if torch_handler is not None else None
    term._listening = True
    try:
        yield term
    finally:
        term._listening = False
        try:
            if term.requested:
                term.shut_down_loaders()
        finally:
            signal.signal(signal.SIGTERM, previous)
            if previous_chld is not None:
                signal.signal(signal.SIGCHLD, previous_chld)


class _SigtermState:
    """This process's SIGTERM as the CLI sees it (:func:`interrupting_sigterm`)."""

    def __init__(self) -> None:
        self.depth = 0  # interrupting_sigterm() blocks open (a command run inside another's)
        self.reset()

    def reset(self) -> None:
        self.received = False
        self.interrupted = False  # KeyboardInterrupt raised (once: a second SIGTERM leaves the clean-up be)
        self.waiting = False  # waiting for it (:func:`sigterm_explains`): the handler only notes it
        self.quiet = False  # SIGCHLD made quiet by a SIGTERM ...
        self.quieted: Any = None  # ... in place of this handler (put back at the end)


_SIGTERM = _SigtermState()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM outside a training loop: ``KeyboardInterrupt`` (the CLI's exit 130); a loader's workers that die of
    the same signal raise nothing more while the process ends."""
    if os.getpid() != _interrupt.pid:  # type: ignore[attr-defined]
        _die_of(signum)
    _SIGTERM.received = True
    if not _SIGTERM.quiet:
        _SIGTERM.quiet, _SIGTERM.quieted = True, signal.signal(signal.SIGCHLD, _quiet_sigchld)
    if not (_SIGTERM.waiting or _SIGTERM.interrupted):
        _SIGTERM.interrupted = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupting_sigterm() -> Iterator[None]:
    """For as long as the block runs, SIGTERM raises ``KeyboardInterrupt`` in this process (once; a forked child
    that inherits the handler dies of it as by default); :func:`sigterm_received` says whether it came. Training
    loops put their own handler in front of it (:func:`sigterm_requests`). The previous handlers are put back
    after it. Outside the main thread nothing is installed."""
    if not _in_main_thread() or _SIGTERM.depth:  # another thread, or inside a command that installed it
        yield
        return
    _SIGTERM.reset()
    _interrupt.pid = os.getpid()  # type: ignore[attr-defined]
    previous = signal.signal(signal.SIGTERM, _interrupt)
    _SIGTERM.depth += 1
    try:
        yield
    finally:
        _SIGTERM.depth -= 1
        signal.signal(signal.SIGTERM, previous)
        if _SIGTERM.quiet and _SIGTERM.quieted is not None:
            signal.signal(signal.SIGCHLD, _SIGTERM.quieted)
        _SIGTERM.reset()


def sigterm_received() -> bool:
    """Whether SIGTERM arrived inside :func:`interrupting_sigterm` (or stopped a training loop)."""
    return _SIGTERM.received


def sigterm_explains(e: BaseException) -> bool:
    """Whether SIGTERM explains the error ``e`` that ended a command: a loader worker's death once SIGTERM arrived
    (waiting up to :data:`SIGTERM_GRACE_S` for it when the worker died of SIGTERM first)."""
    if not worker_death(e):
        return False
    if not _SIGTERM.received and _SIGTERM.depth and _died_of_sigterm(e) and _in_main_thread():
        _SIGTERM.waiting = True
        try:
            deadline = time.monotonic() + SIGTERM_GRACE_S
            while not _SIGTERM.received and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            _SIGTERM.waiting = False
    return _SIGTERM.received


def stopped(verb: str, where: str, checkpoint: str | Path | None, is_main: bool = True) -> NoReturn:
    """End a run stopped by SIGTERM as Ctrl-C ends one, once its checkpoint at ``where`` (``"step 12"``) is
    written: one line naming it (main process), then ``KeyboardInterrupt`` (the CLI's exit 130)."""
    if is_main:
        if checkpoint is None:
            print(f"semmae {verb}: SIGTERM: stopped at {where}, before its first checkpoint", flush=True)
        else:
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
    from semmae.utils.seed import set_rng_state

    items = iter(items)
    for _ in itertools.islice(items, skip):
        pass
    if rng is not None:
        set_rng_state(rng)
    yield from items
