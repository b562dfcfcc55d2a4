"""Housekeeping of a run folder a verb holds: the temporaries an interrupted atomic write left behind, and the
log records past the step a resumed run continues from."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_TMP_RE = re.compile(r"^\..+\.tmp$")  # semmae.utils.io's atomic-write temporaries


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :mod:`semmae.utils.io`'s atomic-write temporaries (``.<name>.<random>.tmp``)."""
    return bool(_TMP_RE.match(name))


def remove_orphaned_temporaries(root: Path, depth: int = 2) -> list[Path]:
    """Delete ``.<name>.<random>.tmp`` files (atomic writes a killed process never renamed) in ``root`` and its
    sub-folders down to ``depth``; returns them. Only call it while holding the run directory."""
    found: list[Path] = []
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).relative_to(root).parts) >= depth:
            dirnames[:] = []
        for name in filenames:
            if _TMP_RE.match(name):
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
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped
