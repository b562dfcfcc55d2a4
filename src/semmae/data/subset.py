"""A class-balanced, seeded subset of an ImageFolder (``semmae data subset``): the same files on every machine.

Each class's image files are sorted by name, shuffled by ``random.Random(f"{seed}-{class}")`` and the first
``per_class`` kept, so the selection depends only on the file names, the seed and the count (not on the file
system's listing order or the Python hash seed). The subset is a folder of class folders holding symlinks to the
source images (or copies) plus a marker file, ``.semmae-subset.json``, that records the selection: a rerun with
the same settings finishes an interrupted subset or leaves a finished one alone, and a rerun with other settings
replaces only the files the marker lists. Torch-free.

Nothing the marker says is trusted as a path (:func:`semmae.utils.ownership.safe_child`): a class or file name that
is absolute, holds a separator or ``..``, or a class folder that is a link out of ``--out``, refuses the whole
marker before anything is deleted. One writer per subset: ``data subset`` holds ``<out>/.semmae.lock`` while it
writes (a second one on the same ``--out`` is refused), and never writes inside a run that is still going.

File names that are not UTF-8 are kept (as Python's surrogate-escaped names: the link or copy gets the same bytes).
GIF files are skipped, as the ImageFolder reader skips them (:data:`semmae.data.images.SKIPPED_EXTENSIONS`), and
counted in a note.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from semmae.data.images import IMAGE_EXTENSIONS, SKIPPED_EXTENSIONS, skipped_note
from semmae.errors import UserError
from semmae.utils.ownership import MarkerError, safe_child
from semmae.utils.run_lock import LOCK_NAME, exclusive, read_holder_file

MARKER = ".semmae-subset.json"
_PLURAL = {"symlink": "symlinks", "copy": "copies"}


@dataclass
class SubsetReport:
    out: Path
    counts: dict[str, int]  # images per class
    mode: str  # "symlink" | "copy"
    written: int  # files made by this call (0: the subset was already there)
    skipped: int = 0  # GIF files of the source left out, as the ImageFolder reader leaves them out
    source: str = "--data"

    def format(self) -> str:
        n, lo, hi = sum(self.counts.values()), min(self.counts.values()), max(self.counts.values())
        per = f"{lo}" if lo == hi else f"{lo}-{hi}"
        what = (
            f"{n} images of {len(self.counts)} classes ({per} per class, {_PLURAL[self.mode]}) in {self.out}"
        )
        return f"wrote {self.written} files: {what}" if self.written else f"already there: {what}"

    @property
    def note(self) -> str | None:
        """One line naming the GIF files skipped in the source, or ``None``."""
        return skipped_note(self.skipped, self.source)


def _listing(folder: Path) -> tuple[list[str], int]:
    """The image file names of a class folder, sorted, and how many GIF files it holds (skipped)."""
    names, skipped = [], 0
    for p in folder.iterdir():
        if not p.is_file():
            continue
        ext = p.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            names.append(p.name)
        elif ext in SKIPPED_EXTENSIONS:
            skipped += 1
    return sorted(names), skipped


def _rng(seed: int, class_name: str) -> random.Random:
    """The shuffle of one class: seeded by ``"<seed>-<class>"``'s UTF-8 bytes (a class name that is not UTF-8, a
    surrogate-escaped str, gives its own bytes back), the same as ``random.Random(str)`` for every UTF-8 name."""
    return random.Random(f"{seed}-{class_name}".encode("utf-8", "surrogateescape"))


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
        files, gifs = _listing(src / c)
        if not files:
            subdirs = sorted(p.name for p in (src / c).iterdir() if p.is_dir())
            hint = f"; {src} looks like a dataset root with splits: pass {src / c}" if subdirs else ""
            if gifs:
                hint += f"; its {gifs} {'/'.join(SKIPPED_EXTENSIONS)} file(s) are skipped"
            raise UserError(f"class folder {src / c} holds no images{hint}")
        _rng(seed, c).shuffle(files)
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
    source files, or copies. ``dst`` must be empty, missing or an earlier subset (its marker), not inside ``src``
    nor holding it, and not inside a live run; it is locked while written."""
    src, dst = Path(src).resolve(), Path(dst).absolute()
    where = dst.resolve()
    if where == src or src in where.parents:
        raise UserError(f"--out {dst} is inside --data {src}; write the subset elsewhere")
    if where in src.parents:
        raise UserError(f"--out {dst} holds --data {src}; write the subset elsewhere")
    selection = select_subset(src, per_class, seed, allow_fewer)
    skipped = sum(_listing(src / c)[1] for c in selection)
    mode = "copy" if copy else "symlink"
    settings = {
        "source": str(src),
        "per_class": per_class,
        "seed": seed,
        "mode": mode,
        "allow_fewer": allow_fewer,
        "files": selection,  # a source folder that gained or lost files selects anew
    }
    with hold_output(dst, f"subset {dst}", "data subset", lambda: _check_out(dst, selection, settings)):
        written = _write(src, dst, selection, settings, copy)
    return SubsetReport(dst, {c: len(f) for c, f in selection.items()}, mode, written, skipped, str(src))


@contextlib.contextmanager
def hold_output(out: Path, what: str, verb: str, check=None):
    """Hold ``out``'s one-writer lock (``<out>/.semmae.lock``) for a data writer (``data subset``, ``data synth``):
    refused in one line inside a run that is still going, in a folder another writer holds, or in the folder of
    another verb's run (its lock file records that run: it is left alone). ``check`` runs before the lock file is
    made (refuse a folder that is not ours without writing in it) and again while holding it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file")
    from semmae.utils.rundir import live_lock_above

    live = live_lock_above(out)
    if live is not None and live != out.resolve():
        raise UserError(
            f"--out {out} lies inside {live}, the folder of a run that is still going; wait for it to end or use "
            "another --out"
        )
    lock = out / LOCK_NAME
    if live is None:  # a live --out is refused by its lock below, naming the holder
        if lock.is_file() and not lock.is_symlink():
            holder = read_holder_file(lock)
            other = holder.get("holder", holder.get("verb"))
            if other != verb:
                name = f"`semmae {other}`" if other else "another program"
                raise UserError(f"--out {out} holds the lock file of {name}; write to another --out")
        if check is not None:
            check()
    with exclusive(lock, what, verb):
        if check is not None:
            check()
        yield


def _entries(dst: Path) -> list[str]:
    """What ``dst`` holds besides its lock file (and an atomic write a killed process left)."""
    if not dst.is_dir():
        return []
    from semmae.utils.run_housekeeping import is_temporary

    return [n for n in os.listdir(dst) if n != LOCK_NAME and not is_temporary(n)]


def _check_out(dst: Path, selection: dict[str, list[str]], settings: dict) -> None:
    """Refuse an ``--out`` that holds something and no subset marker, a marker that names anything unsafe, a
    class folder to be written that is a link out of ``--out``, or a file where the subset would write one that
    no subset marker lists (a user's own image in a class folder): before anything is deleted or written."""
    if dst.exists() and not dst.is_dir():
        raise UserError(f"--out {dst} is a file")
    previous = _read_marker(dst / MARKER)
    if previous is None and _entries(dst):
        raise UserError(
            f"--out {dst} is not empty and not a subset written by semmae data subset; pick another"
        )
    # a finished subset rerun with the same settings writes nothing; any other run replaces a file where it
    # writes only if a subset made it
    unchanged = previous is not None and previous.get("complete") and _same(previous, settings)
    owned = set(_made_files(dst, previous)) if previous is not None else set()
    for c, names in selection.items():
        folder = _class_folder(dst, c, f"--out {dst}")
        for name in [] if unchanged else names:
            target = folder / name
            if (target.exists() or target.is_symlink()) and target not in owned:
                raise UserError(
                    f"--out {dst} holds {target}, which data subset did not write (or it, or its source, changed since); "
                    "nothing was deleted or written: move it out or use another --out"
                )


def _write(src: Path, dst: Path, selection: dict[str, list[str]], settings: dict, copy: bool) -> int:
    marker = dst / MARKER
    previous = _read_marker(marker)
    if previous is not None and previous.get("complete") and _same(previous, settings):
        return 0
    if previous is not None and not _same(previous, settings):
        _remove(dst, previous)
    dst.mkdir(parents=True, exist_ok=True)
    record = {**settings, "complete": False}
    _write_marker(marker, record)  # first: an interrupted run leaves a subset a rerun can finish or replace
    written = 0
    for c, names in selection.items():
        folder = _class_folder(dst, c, f"--out {dst}")
        folder.mkdir(exist_ok=True)
        for name in names:
            written += _place(src / c / name, folder / name, copy)
    _write_marker(marker, {**record, "complete": True})
    return written


def _same(previous: dict, settings: dict) -> bool:
    return all(previous.get(k) == v for k, v in settings.items())


def _read_marker(marker: Path) -> dict | None:
    """The marker's record (``files`` checked to be ``{str: [str, ...]}``), or ``None`` when there is none."""
    if marker.is_symlink() or (marker.exists() and not marker.is_file()):
        raise MarkerError(f"{marker} is not a plain file; data subset leaves {marker.parent} alone")
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{marker} is unreadable; delete the folder {marker.parent} by hand") from None
    files = record.get("files", {}) if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, list) for v in files.values()):
        raise MarkerError(f"{marker} is damaged; data subset leaves {marker.parent} alone: delete it by hand")
    return record


def _write_marker(marker: Path, record: dict) -> None:
    from semmae.utils.io import atomic_write_json

    atomic_write_json(
        marker, record
    )  # a random temporary name: a file planted beside the marker is never followed


def _class_folder(dst: Path, name: object, where: object) -> Path:
    """``dst/<name>`` for a class named by the marker or the source (``where``, for the message): one plain entry
    of ``dst`` and, when it exists, a real folder there (not a link to a folder elsewhere)."""
    try:
        folder = safe_child(dst, name)
    except MarkerError as e:
        raise MarkerError(
            f"{where}: {e}; data subset deletes and writes nothing: use another --out"
        ) from None
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        target = f"a link to {os.path.realpath(folder)}" if folder.is_symlink() else "not a folder"
        raise MarkerError(
            f"{where}: class {name!r} at {folder} is {target}, not a folder of the subset; data subset deletes "
            "and writes nothing: use another --out"
        )
    return folder


def _owned_files(dst: Path, previous: dict) -> list[Path]:
    """Every file an earlier subset's marker lists, each checked (class folder a real folder of ``dst``, file a
    plain entry of it): one unsafe name refuses the marker before anything is deleted."""
    marker = dst / MARKER
    paths = []
    for c, names in previous.get("files", {}).items():
        folder = _class_folder(dst, c, marker)
        for name in names:
            try:
                paths.append(safe_child(folder, name))
            except MarkerError as e:
                raise MarkerError(
                    f"{marker}: {e}; data subset deletes and writes nothing: use another --out"
                ) from None
    return paths


def _place(source: Path, target: Path, copy: bool) -> int:
    """Link or copy one file; 0 when ``target`` is already the right link or a copy of the source's bytes. Anything
    else at ``target`` was refused by :func:`_check_out`; met here (put there since), it is refused too."""
    if target.exists() or target.is_symlink():
        if _made_from(target, source, copy):
            return 0
        raise UserError(
            f"{target} appeared while data subset was writing and is not its own; it was left alone: move it out "
            "and rerun"
        )
    if copy:
        # a fresh temporary of its own (never a fixed name: a user's `<image>.part` there stays theirs)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return 1
    target.symlink_to(source)
    return 1


def _made_from(target: Path, source: Path, copy: bool) -> bool:
    """Whether ``target`` is what the subset made from ``source``: for a copy subset a plain file with the source's
    bytes (a copy you retouched is yours, and so is every copy once you change the source), for a symlink subset a
    link to the source."""
    if not copy:
        return target.is_symlink() and os.readlink(target) == str(source)
    if target.is_symlink() or not target.is_file():
        return False
    try:
        return target.stat().st_size == source.stat().st_size and filecmp.cmp(target, source, shallow=False)
    except OSError:
        return False


def _made_files(dst: Path, previous: dict) -> list[Path]:
    """The files an earlier subset's marker lists that are what its recorded mode made from the recorded source
    (:func:`_made_from`): anything else at a listed name is a user's own, never replaced nor deleted."""
    copy = previous.get("mode") == "copy"
    source = Path(str(previous.get("source", "")))
    made = []
    for p in _owned_files(dst, previous):
        if previous.get("source") and _made_from(p, source / p.parent.name / p.name, copy):
            made.append(p)
    return made


def _remove(dst: Path, previous: dict) -> None:
    """Delete the files an earlier subset's marker lists (and class folders left empty), nothing else: every name
    is checked first (:func:`_owned_files`), and only what the recorded mode made goes (a link of a symlink subset,
    a plain file of a copy subset)."""
    paths = _owned_files(dst, previous)
    for p in _made_files(dst, previous):
        p.unlink()
    for folder in {p.parent for p in paths}:
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
