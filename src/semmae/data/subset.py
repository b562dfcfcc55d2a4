"""A class-balanced, seeded subset of an ImageFolder (``semmae data subset``): the same files on every machine.

Each class's image files are sorted by name, shuffled by ``random.Random(f"{seed}-{class}")`` and the first
``per_class`` kept, so the selection depends only on the file names, the seed and the count (not on the file
system's listing order or the Python hash seed). The subset is a folder of class folders holding symlinks to the
source images (or copies) plus a marker file, ``.semmae-subset.json``, that records the selection: a rerun with
the same settings finishes an interrupted subset or leaves a finished one alone, and a rerun with other settings
replaces only the files the marker lists. Torch-free.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from semmae.data.images import IMAGE_EXTENSIONS
from semmae.errors import UserError

MARKER = ".semmae-subset.json"


@dataclass
class SubsetReport:
    out: Path
    counts: dict[str, int]  # images per class
    mode: str  # "symlink" | "copy"
    written: int  # files made by this call (0: the subset was already there)

    def format(self) -> str:
        n, lo, hi = sum(self.counts.values()), min(self.counts.values()), max(self.counts.values())
        per = f"{lo}" if lo == hi else f"{lo}-{hi}"
        what = f"{n} images of {len(self.counts)} classes ({per} per class, {self.mode}s) in {self.out}"
        return f"wrote {self.written} files: {what}" if self.written else f"already there: {what}"


def _images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def select_subset(
    src: str | Path, per_class: int, seed: int = 0, allow_fewer: bool = False
) -> dict[str, list[str]]:
    """File names kept in each class folder of ImageFolder ``src``: ``{class: [name, ...]}`` (classes sorted).

    A class with fewer than ``per_class`` images is refused (``UserError`` naming it) unless ``allow_fewer``,
    which keeps all of its images."""
    src = Path(src)
    if per_class < 1:
        raise UserError(f"--per-class must be >= 1, got {per_class}")
    if not src.is_dir():
        raise UserError(f"dataset folder {src} does not exist")
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{src} has no class folders (ImageFolder layout <data>/<class>/<image> expected)")
    selection: dict[str, list[str]] = {}
    for c in classes:
        files = _images(src / c)
        if not files:
            subdirs = sorted(p.name for p in (src / c).iterdir() if p.is_dir())
            hint = f"; {src} looks like a dataset root with splits: pass {src / c}" if subdirs else ""
            raise UserError(f"class folder {src / c} holds no images{hint}")
        random.Random(f"{seed}-{c}").shuffle(files)
        selection[c] = files[:per_class]
    short = {c: len(f) for c, f in selection.items() if len(f) < per_class}
    if short and not allow_fewer:
        names = ", ".join(f"{c} ({n})" for c, n in sorted(short.items(), key=lambda x: x[1])[:3])
        more = f" and {len(short) - 3} more" if len(short) > 3 else ""
        raise UserError(
            f"--per-class {per_class} is more than {len(short)} class(es) hold: {names}{more}; "
            f"use --per-class {min(short.values())} or --allow-fewer (keeps every image of a short class)"
        )
    return selection


def make_subset(
    src: str | Path,
    dst: str | Path,
    per_class: int,
    seed: int = 0,
    copy: bool = False,
    allow_fewer: bool = False,
) -> SubsetReport:
    """Write the subset of :func:`select_subset` under ``dst`` (``dst/<class>/<name>``) as symlinks to the resolved
    source files, or copies. ``dst`` must be empty, missing or an earlier subset (its marker), and not inside
    ``src``."""
    src, dst = Path(src).resolve(), Path(dst).absolute()
    if dst.resolve() == src or src in dst.resolve().parents:
        raise UserError(f"--out {dst} is inside --data {src}; write the subset elsewhere")
    selection = select_subset(src, per_class, seed, allow_fewer)
    mode = "copy" if copy else "symlink"
    settings = {
        "source": str(src),
        "per_class": per_class,
        "seed": seed,
        "mode": mode,
        "allow_fewer": allow_fewer,
    }
    marker = dst / MARKER
    previous = _read_marker(marker) if dst.exists() else None
    if dst.exists() and not dst.is_dir():
        raise UserError(f"--out {dst} is a file")
    if previous is None and dst.exists() and any(dst.iterdir()):
        raise UserError(
            f"--out {dst} is not empty and not a subset written by semmae data subset; pick another"
        )
    settings["files"] = selection  # a source folder that gained or lost files selects anew
    if previous is not None and previous.get("complete") and _same(previous, settings):
        return SubsetReport(dst, {c: len(f) for c, f in selection.items()}, mode, 0)
    if previous is not None and not _same(previous, settings):
        _remove(dst, previous)
    dst.mkdir(parents=True, exist_ok=True)
    record = {**settings, "complete": False}
    _write_marker(marker, record)  # first: an interrupted run leaves a subset a rerun can finish or replace
    written = 0
    for c, names in selection.items():
        (dst / c).mkdir(exist_ok=True)
        for name in names:
            written += _place(src / c / name, dst / c / name, copy)
    _write_marker(marker, {**record, "complete": True})
    return SubsetReport(dst, {c: len(f) for c, f in selection.items()}, mode, written)


def _same(previous: dict, settings: dict) -> bool:
    return all(previous.get(k) == v for k, v in settings.items())


def _read_marker(marker: Path) -> dict | None:
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        raise UserError(f"{marker} is unreadable; delete the folder {marker.parent} by hand") from None


def _write_marker(marker: Path, record: dict) -> None:
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, marker)


def _place(source: Path, target: Path, copy: bool) -> int:
    """Link or copy one file; 0 when ``target`` is already the right link or a copy of the right size."""
    if copy:
        if target.is_file() and not target.is_symlink() and target.stat().st_size == source.stat().st_size:
            return 0
        target.unlink(missing_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return 1
    if target.is_symlink() and os.readlink(target) == str(source):
        return 0
    target.unlink(missing_ok=True)
    target.symlink_to(source)
    return 1


def _remove(dst: Path, previous: dict) -> None:
    """Delete the files an earlier subset's marker lists (and class folders left empty), nothing else."""
    for c, names in previous.get("files", {}).items():
        folder = dst / c
        for name in names:
            if "/" in name or name.startswith("."):
                continue  # a marker edited by hand: never step outside the class folder
            p = folder / name
            if p.is_symlink() or p.is_file():
                p.unlink()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
