"""The one-writer lock of a folder: an exclusive, non-blocking ``fcntl.flock`` on a lock file holding its holder's
pid, host and verb (the operating system drops it when the process ends in any way, so a stale lock cannot exist).
:mod:`semmae.utils.rundir` holds run folders with it; :func:`exclusive` holds anything else (a part cache)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from semmae.errors import UserError

#: the lock file of a run folder
LOCK_NAME = ".semmae.lock"


def acquire(lock_path: Path, what: str, flag: str) -> int:
    """An exclusive, non-blocking ``flock`` on ``lock_path`` (created if missing); returns its descriptor, or
    raises a UserError naming the holder. Robust to the file being removed or replaced while we wait for it."""
    for _ in range(5):
        try:  # never through a link: its target (a user's file elsewhere) would be truncated
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(
                    f"{lock_path} is a link, not a semmae lock file; semmae never writes through it: remove it "
                    f"or use another {flag}"
                ) from None
            raise UserError(f"cannot create the lock file {lock_path}: {e.strerror or e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"{lock_path} is not a plain file, so not a semmae lock file; use another {flag}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {lock_path}: {e.strerror or e}") from None
            verb = holder.get("holder", holder.get("verb", "?"))
            who = (
                f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, `semmae {verb}`"
                if holder
                else "another process"
            )
            raise UserError(
                f"{what} is in use by another run ({who}); wait for it to end or use another {flag}"
            ) from None
        try:  # the file we locked must still be the one at the path (a holder may have removed it)
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise UserError(f"cannot lock {lock_path}: the lock file keeps being replaced")


@contextlib.contextmanager
def exclusive(lock_path: str | Path, what: str, verb: str, flag: str = "--out"):
    """Hold an exclusive lock for a writer that owns something other than a run directory (a part cache being
    exported: ``<cache>.lock`` beside it); a second writer is refused in one line. The lock file is removed on
    exit (while still held, so a waiting process notices and retries)."""
    from semmae.utils.io import forget_written, note_identity, note_written

    lock_path = Path(lock_path)
    if lock_path.is_symlink() or (
        lock_path.exists()
        and (not lock_path.is_file() or (lock_path.stat().st_size and not _holder_record(lock_path)))
    ):
        raise UserError(f"{lock_path} exists and is not a semmae lock file; move it or use another {flag}")
    note_written(lock_path)  # a run folder holding it (the demo's) records it: a kill leaves it semmae's
    if not lock_path.parent.exists():
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {lock_path.parent}: {e.strerror or e}") from None
    fd = acquire(lock_path, what, flag)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "holder": verb, "started": time.time()}
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        note_identity(lock_path)
        yield
    finally:
        try:
            lock_path.unlink()
            forget_written(lock_path)
        except OSError:
            pass
        os.close(fd)


def _holder_record(path: Path) -> bool:
    """Whether ``path`` holds what semmae writes into a lock file (its holder's pid and verb), not merely JSON."""
    holder = read_holder_file(path)
    return "pid" in holder and ("holder" in holder or "verb" in holder)


def read_holder_file(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return read_holder(fd)
    finally:
        os.close(fd)


def read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        holder = json.loads(data) if data else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def locked_folder_above(path: str | Path, ours: set[Path] = frozenset()) -> Path | None:
    """The nearest of ``path`` and its parents whose run lock another process holds now (``ours``: resolved folders
    this process holds, which do not count), or ``None``. A shared ``flock`` that fails means a live holder."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        if folder not in ours and held_by_another(folder / LOCK_NAME):
            return folder
    return None


def locked_folder_below(path: str | Path, ours: set[Path] = frozenset()) -> Path | None:
    """A folder strictly below ``path`` (links not followed) whose run lock another process holds now, or ``None``:
    a run going on inside a folder that ``--overwrite`` would empty (``ours`` as in :func:`locked_folder_above`)."""
    path = Path(path).resolve()
    for here, _dirs, files in os.walk(path):
        folder = Path(here)
        if (
            LOCK_NAME in files
            and folder != path
            and folder not in ours
            and held_by_another(folder / LOCK_NAME)
        ):
            return folder
    return None


def held_by_another(lock: Path) -> bool:
    """Whether a process (another one, or this one through another descriptor) holds ``lock`` exclusively now."""
    if not lock.is_file():
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # also drops the shared lock, if we got it
    return False
