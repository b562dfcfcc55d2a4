"""What tells a file semmae wrote from another file later put at its name (owner markers, format 3:
:mod:`semmae.utils.ownership`): its inode, size and modification time, and for a file semmae appends to a hash of
its first bytes. A rename keeps all of them, so an atomic write records the identity of its temporary just before
the rename that puts it in place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

#: how many leading bytes of a file its identity hashes (what a file semmae appends to keeps from its first write)
_HEAD_BYTES = 4096


def identity(path: str | Path, appended: bool = False) -> list | None:
    """What tells the file semmae wrote at ``path`` from any other file later put there: ``[inode, size,
    mtime_ns, head_len, head_hash]``. A file written once has ``head_len`` 0: it is itself while its inode, size
    and modification time are. A file semmae goes on appending to (``appended``: ``log.jsonl``, an event file)
    also has the SHA-256 prefix of its first ``head_len`` bytes (at most 4 KiB), which appending never changes.
    ``None`` for anything that is not a plain file (a link, a folder, nothing)."""
    with _plain_file(path) as opened:
        if opened is None:
            return None
        fd, st = opened
        try:
            head = os.pread(fd, _HEAD_BYTES, 0) if appended else b""
        except OSError:
            return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, len(head), _digest(head) if head else ""]


@contextlib.contextmanager
def _plain_file(path: str | Path):
    """``(fd, stat)`` of the plain file at ``path`` opened for reading, never through a link; ``None`` for anything
    else (a link, a folder, nothing) and for a read that fails."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        yield None
        return
    try:
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        yield (fd, st) if st is not None and stat.S_ISREG(st.st_mode) else None
    finally:
        os.close(fd)


def _digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:32]


def folder_identity(folder: str | Path) -> list | None:
    """``[device, inode]`` of a folder: another value means the folder was copied (or its disk remounted), so the
    inodes of the files in it say nothing any more."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def matches(path: str | Path, known: Iterable[list], same_folder: bool = True) -> bool:
    """Whether the file at ``path`` is one semmae wrote there (:func:`identity`): same inode as a recorded identity
    and either the same size and modification time or, for a file semmae appends to, the same first bytes. A file
    put there later has another inode; one that reuses a deleted file's inode has another modification time and
    (a file semmae appends to) other first bytes, unless it is a copy of semmae's own. In a folder copied
    elsewhere (``same_folder`` false: ``cp -a``, ``rsync -a``) inodes are not compared: its files are semmae's
    while their sizes and times (or first bytes) are what semmae recorded."""
    known = [k for k in known]
    if not known:
        return False
    with _plain_file(path) as opened:
        if opened is None:
            return False
        fd, st = opened
        for ino, size, mtime_ns, head_len, head_hash in known:
            if same_folder and st.st_ino != ino:
                continue
            if st.st_size == size and st.st_mtime_ns == mtime_ns:
                return True
            try:
                if st.st_size >= head_len > 0 and _digest(os.pread(fd, head_len, 0)) == head_hash:
                    return True
            except OSError:
                return False
    return False
