"""Housekeeping of a run folder a verb holds: the temporaries an interrupted atomic write left behind, and the
log records past the step a resumed run continues from."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

_TMP_RE = re.compile(r"^\..+\.tmp$")  # semmae.utils.io's atomic-write temporaries
#: exactly what ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")`` makes: the name it is written for, then
#: 8 random characters
_OWN_TMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :mod:`semmae.utils.io`'s atomic-write temporaries (``.<name>.<random>.tmp``)."""
    return bool(_TMP_RE.match(name))


def temporary_target(name: str) -> str | None:
    """The file an atomic-write temporary ``.<name>.<8 random>.tmp`` was written for (``name``), else ``None``."""
    m = _OWN_TMP_RE.match(name)
    return m.group("target") if m else None


def remove_orphaned_temporaries(
    root: Path, depth: int = 2, written_for: Callable[[str], bool] = lambda rel: True
) -> list[Path]:
    """Delete atomic-write temporaries a killed process never renamed in ``root`` and its sub-folders down to
    ``depth``; returns them. Only a temporary of a file the run records (``written_for(rel)``, ``rel`` the file's
    path relative to ``root``) is deleted: a user's ``.draft.tmp`` stays. A sub-folder where another process's run
    is going (its lock held) is left alone: its temporaries are being written. Only call it while holding ``root``."""
    from semmae.utils.run_lock import LOCK_NAME, held_by_another

    found: list[Path] = []
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and LOCK_NAME in filenames and held_by_another(Path(dirpath) / LOCK_NAME):
            dirnames[:] = []
            continue
        if len(rel_dir.parts) >= depth:
            dirnames[:] = []
        for name in filenames:
            target = temporary_target(name)
            if target is None or not written_for((rel_dir / target).as_posix()):
                continue
            p = Path(dirpath) / name
            try:
                p.unlink()
            except OSError:
                continue
            found.append(p)
    return found


def truncate_log(path: Path, keep_until: int) -> int:
    """Rewrite ``log.jsonl`` without the records whose step is past ``keep_until`` (and without a line torn by a
    kill); returns how many records were dropped."""
    from semmae.utils.io import atomic_write_text

    if not path.is_file():
        return 0
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record.get("step", 0))
        except (ValueError, TypeError, AttributeError):
            continue  # a torn last line
        if step <= keep_until:
            kept.append(line)
    dropped = sum(1 for line in lines if line.strip()) - len(kept)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept), appended=True)
    return dropped
