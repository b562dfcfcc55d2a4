"""What semmae may delete or replace: one rule for every verb that writes (issue 37).

- **A folder is semmae's only if semmae created it.** A verb that starts writing into an empty folder first writes
  an owner marker, ``.semmae-owner.json``, atomically: its kind (``run``, ...), the verb, a random id, the
  top-level entries it wrote and every file it wrote below them (``checkpoints/ckpt-1.pth``; kept up to date
  while it writes). ``--overwrite`` and resume act only on a folder whose marker has the same kind and verb, never
  on one that holds or lies inside an input of the command, never on a live run, and delete only the files the
  marker records (then the folders they leave empty); a folder holding anything else, at the top or inside one of
  its subfolders, is refused whole. A tracker's store (``wandb/``) is kept: never deleted, never searched.
- **Nothing read from a marker or record is trusted as a path.** An entry that is absolute, holds a separator or
  ``..``, or resolves (through a symlink) outside its folder is refused (:func:`safe_child`).
- **An output folder that is not a run** (``export``'s timm or part-learner folder, ``convert``'s tree) follows the
  same rule (:func:`claim_output_folder`): new or empty, or one with this verb's marker and nothing else in it,
  and no link among its entries (a write would land in the folder it points to); a folder that looks like the
  verb's output but has no marker (written before markers existed, or copied without it) is refused, named.
- **A single-file output** (``compare --json``, ``export x.safetensors``, a figure) replaces an existing file only
  with ``--overwrite``, only if semmae wrote it (its own metadata says so), never an input of the command, never a
  file inside a run folder (:func:`check_output_file`); the write itself is atomic (:mod:`semmae.utils.io`).

Folders written before markers existed (a run's lock file records its verb) are adopted by a resume of the same
verb; ``--overwrite`` refuses them, naming the folder, since nothing proves what in them semmae wrote.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from semmae.errors import UserError
from semmae.utils.file_identity import folder_identity, identity, matches

#: the owner marker of a folder semmae created
OWNER_NAME = ".semmae-owner.json"
#: bookkeeping files of a folder that are never listed as its entries (the marker itself, the one-writer lock)
_BOOKKEEPING = (OWNER_NAME, ".semmae.lock")
BOOKKEEPING_NAMES = _BOOKKEEPING
#: format 2 records, below the top level, every file semmae wrote (``files``): a user's file put inside a folder
#: semmae made (``checkpoints/``, ``tb/``) is never deleted with it; format 3 also records each file's identity
#: (``ids``), so a file put at a recorded name (after a kill, or in place of the run's own) is never taken for it
_FORMAT = 3
MARKER_FORMAT = _FORMAT


@dataclass
class Owner:
    """An owner marker: which verb made the folder, the top-level entries it wrote there, and (``files``) every
    file it wrote below them, by relative path (``None``: a format-1 marker, which recorded folders only).
    ``ids`` (format 3) maps each recorded file to the identities semmae saw it written with (:func:`identity`: its
    inode, size, modification time and a hash of its first bytes); a recorded file is semmae's only while it still
    matches one (:func:`trusted`). A name recorded just before a write (the write killed before it finished) has
    none: whatever a user later puts there stays theirs. ``None``: a marker from before identities, whose records
    are taken at their word. ``kept`` entries are stores a tracker library writes on its own (``wandb/``, ``mlflow.db``): semmae never
    deletes them nor anything inside them; ``--overwrite`` starts a new tracker run beside the old one.
    ``events``: ``<folder>/<token>`` for each TensorBoard writer semmae opened, recorded before it opened: the
    writer's event file, which it names itself at creation, ends with ``.<token>`` (:func:`event_file_name`)."""

    kind: str
    verb: str
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    created: float = field(default_factory=time.time)
    host: str = field(default_factory=socket.gethostname)
    entries: list[str] = field(default_factory=list)
    files: list[str] | None = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    ids: dict[str, list[list]] | None = None
    home: list[int] | None = None
    events: list[str] = field(default_factory=list)
    format: int = _FORMAT

    def describes(self, kind: str, verb: str) -> bool:
        return self.kind == kind and self.verb == verb


class MarkerError(UserError):
    """An owner marker that cannot be read or names a path outside its folder."""


def safe_child(folder: str | Path, name: object) -> Path:
    """``folder / name`` for a name read from a marker or record, refused (:class:`MarkerError`) unless it is one
    plain entry of ``folder``: a non-empty string, not absolute, no separator, not ``.``/``..``, and not resolving
    (through a symlinked parent) outside ``folder``. A symlink entry itself is allowed: deleting it removes the
    link, never its target."""
    folder = Path(folder)
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
    ):
        raise MarkerError(
            f"{folder} names {name!r}, which is not a plain entry of the folder; semmae leaves it alone"
        )
    child = folder / name
    if Path(os.path.realpath(child.parent)) != Path(os.path.realpath(folder)):
        raise MarkerError(f"{folder} names {name!r}, which lies outside the folder; semmae leaves it alone")
    return child


def safe_path(folder: str | Path, rel: object) -> Path:
    """``folder / rel`` for a relative path read from a marker (``checkpoints/ckpt-1.pth``), refused
    (:class:`MarkerError`) unless every part is a plain entry (:func:`safe_child`) and no part resolves outside
    ``folder`` through a link."""
    if not isinstance(rel, str) or not rel:
        raise MarkerError(
            f"{folder} names {rel!r}, which is not a path inside the folder; semmae leaves it alone"
        )
    here = Path(folder)
    for part in rel.split("/"):
        here = safe_child(here, part)
    root = os.path.realpath(folder)
    parent = os.path.realpath(here.parent)
    if parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
        raise MarkerError(
            f"{folder} names {rel!r}, which lies outside the folder through a link; semmae leaves it alone (a "
            "subfolder moved elsewhere and linked back: move it back into the folder)"
        )
    return here


def read_owner(folder: str | Path) -> Owner | None:
    """The owner marker of ``folder``, or ``None`` when it has none. A marker that cannot be parsed, or lists an
    entry that is not a plain entry of the folder, raises :class:`MarkerError` (its folder is then left alone)."""
    path = Path(folder) / OWNER_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise MarkerError(
            f"{path} is not a semmae owner marker (not a plain file); semmae leaves {folder} alone"
        )
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
        owner = Owner(
            kind=str(raw["kind"]),
            verb=str(raw["verb"]),
            id=str(raw["id"]),
            created=float(raw["created"]),
            host=str(raw.get("host", "")),
            entries=list(raw.get("entries", [])),
            files=list(raw["files"]) if raw.get("files") is not None else None,
            kept=list(raw.get("kept", [])),
            ids=_read_ids(raw["ids"]) if raw.get("ids") is not None else None,
            home=[int(v) for v in raw["home"]] if raw.get("home") is not None else None,
            events=[_event_token(v) for v in raw.get("events", [])],
            format=int(raw.get("format", 1)),
        )
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise MarkerError(f"{path} is damaged ({type(e).__name__}); semmae leaves {folder} alone") from None
    for name in (*owner.entries, *owner.kept):
        safe_child(folder, name)
    for rel in (*(owner.files or ()), *owner.events):
        safe_path(folder, rel)
    return owner


#: a TensorBoard event file of a writer semmae opened with ``filename_suffix=".<token>"``
_EVENT_FILE = re.compile(r"events\.out\.tfevents\.\d+\..+\.\d+\.([0-9a-f]{16})")


def _event_token(value: object) -> str:
    """One ``events`` record of a marker: ``<folder>/<16 hex digits>``."""
    if not isinstance(value, str) or re.fullmatch(r".+/[0-9a-f]{16}", value) is None:
        raise ValueError("events")
    return value


def new_event_token() -> str:
    """The token ending the name of the event file a TensorBoard writer is about to create."""
    return secrets.token_hex(8)


def event_file_tokens(folder: Path, owner: Owner) -> dict[str, str]:
    """Each file in ``folder`` (a run folder) that a TensorBoard writer semmae opened there created, whether or
    not a record of it followed (a kill between the two): relative path -> the token recorded before the writer
    opened. A file named so without a recorded token is not semmae's."""
    found: dict[str, str] = {}
    for rec in owner.events:
        sub, token = rec.rsplit("/", 1)
        where = Path(folder) / sub
        if where.is_symlink() or not where.is_dir():
            continue
        for name in sorted(os.listdir(where)):
            m = _EVENT_FILE.fullmatch(name)
            if m is not None and m.group(1) == token:
                found[f"{sub}/{name}"] = token
    return found


def _read_ids(raw: object) -> dict[str, list[list]]:
    """A marker's ``ids``, checked to be ``{path: [[ino, size, mtime_ns, head_len, head_hash], ...]}``."""
    if not isinstance(raw, dict):
        raise TypeError("ids")
    ids = {}
    for rel, found in raw.items():
        if not isinstance(rel, str) or not isinstance(found, list):
            raise TypeError("ids")
        for one in found:
            if not (
                isinstance(one, list)
                and len(one) == 5
                and all(isinstance(v, int) for v in one[:4])
                and isinstance(one[4], str)
            ):
                raise TypeError("ids")
        ids[rel] = [list(one) for one in found]
    return ids


# -- file identities (format 3) ------------------------------------------------------------------------------------
def record_identity(owner: Owner, rel: str, ident: list) -> bool:
    """Record that semmae wrote ``rel`` as ``ident``; the previous identity stays recorded beside it (a kill before
    the replacing rename leaves the previous file there, still semmae's). Returns whether anything changed."""
    if owner.ids is None:
        return False
    known = owner.ids.get(rel, [])
    if known and known[0] == ident:
        return False
    owner.ids[rel] = [ident, *[k for k in known if k != ident][:1]]
    return True


def trusted(folder: str | Path, owner: Owner, rel: str) -> bool:
    """Whether what lies at the recorded path ``rel`` is still what semmae wrote there: anything for a marker from
    before identities (``ids`` None), a folder (a folder is deleted only once emptied of semmae's files), else a
    file matching a recorded identity (:func:`matches`). A link semmae made is never recorded by identity."""
    if owner.ids is None:
        return True
    path = Path(folder) / rel
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        return True  # nothing there to take for semmae's (a name recorded before a write a kill stopped)
    if not matches(path, owner.ids.get(rel, ()), at_home(folder, owner)):
        return False
    return rel.rpartition("/")[2] != LOG_NAME or foreign_log_line(path) is None


#: the run log semmae appends to; a file it appends to is its own while its first bytes are, so the log is also
#: read whole before it is taken for semmae's: a note you appended to it makes it yours
LOG_NAME = "log.jsonl"


def foreign_log_line(path: Path) -> int | None:
    """The number (from 1) of the first line of a run log that is not a record as semmae writes it, ``0`` when the
    log cannot be read, ``None`` when every line is one (:class:`semmae.utils.run_logger.RunLogger`:
    ``json.dumps`` of an object whose first key is ``step``, an integer, and whose last is ``time``, a number, byte
    for byte); a last line a kill tore (no newline at its end, the start of such a record) is allowed. A line you
    added in any other form (a note, ``jq -c`` output, a record without its time) makes the log yours."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return 0
    for i, line in enumerate(lines):
        if not line and i == len(lines) - 1:
            continue  # after the last newline
        try:
            text = line.decode("utf-8")
            record = json.loads(text)
        except ValueError:
            if i == len(lines) - 1 and line.startswith(b'{"step": '):
                continue  # the start of a record, torn by a kill mid-append
            return i + 1
        if not _semmae_record(record) or json.dumps(record) != text:
            return i + 1
    return None


def _semmae_record(record: object) -> bool:
    if not isinstance(record, dict) or len(record) < 2:
        return False
    keys = list(record)
    step, when = record[keys[0]], record[keys[-1]]
    return (
        keys[0] == "step"
        and keys[-1] == "time"
        and isinstance(step, int)
        and not isinstance(step, bool)
        and isinstance(when, (int, float))
        and not isinstance(when, bool)
    )


def at_home(folder: str | Path, owner: Owner) -> bool:
    """Whether ``folder`` is the very folder ``owner``'s identities were recorded in (not a copy of it elsewhere,
    whose files have other inodes: :func:`semmae.utils.file_identity.matches`)."""
    return owner.home is None or owner.home == folder_identity(folder)


def write_owner(folder: str | Path, owner: Owner) -> None:
    """Write ``folder``'s marker atomically."""
    from semmae.utils.io import atomic_write_json

    atomic_write_json(Path(folder) / OWNER_NAME, asdict(owner))


def note_after_run(folder: str | Path, name: str) -> None:
    """List ``name``, a top-level file semmae wrote into a run folder just after its run ended (the traceback of
    an internal error, ``error.log``), in the folder's marker; nothing when the folder has no readable run
    marker."""
    try:
        owner = read_owner(folder)
    except MarkerError:
        return
    if owner is None or owner.kind != "run" or name in owner.entries:
        return
    owner.entries = sorted({*owner.entries, name})
    ident = identity(Path(folder) / name, appended=True)  # a later internal error appends to it
    if ident is not None:
        record_identity(owner, name, ident)
    try:
        write_owner(folder, owner)
    except UserError:
        pass


def current_entries(folder: str | Path, temporaries: bool = False) -> list[str]:
    """The top-level entries of ``folder`` that a marker would list (bookkeeping and temporaries aside).
    ``temporaries``: a folder semmae has no marker in, whose ``.x.abcd1234.tmp`` files are not semmae's (only the
    temporary of a marker killed mid-write is), so they count."""
    from semmae.utils.run_housekeeping import is_temporary, temporary_target

    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(
        n
        for n in names
        if n not in _BOOKKEEPING
        and (not is_temporary(n) or (temporaries and temporary_target(n) not in _BOOKKEEPING))
    )


def markable(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that a marker lists (the folder's bookkeeping and write temporaries aside)."""
    from semmae.utils.run_housekeeping import is_temporary

    return [n for n in names if n not in _BOOKKEEPING and not is_temporary(n)]


def note_entries(folder: str | Path, owner: Owner) -> bool:
    """Add the folder's present top-level entries to ``owner.entries`` and rewrite the marker when that changed;
    returns whether it did (``data get``'s folder, which only the download writes; a run folder notes only what
    the run writes: :meth:`semmae.utils.rundir.RunDir.note`)."""
    new = [n for n in current_entries(folder) if n not in owner.entries]
    if not new:
        return False
    owner.entries = sorted(set(owner.entries) | set(new))
    write_owner(folder, owner)
    return True


def unlisted_entries(folder: str | Path, owner: Owner, deep: bool = False) -> list[str]:
    """Entries of ``folder`` its marker does not list: files semmae did not write there. An empty folder is not
    counted (nothing in it to lose; a run stopped between making a folder and its first write leaves one), and is
    never deleted either: ``--overwrite`` deletes only what the marker lists.

    ``deep`` (before deleting): also every file or link inside a listed folder that is not recorded
    (:func:`recorded_paths`: ``checkpoints/notes.txt``), so ``--overwrite`` refuses the folder rather than delete
    it. A kept entry (a tracker's store) is not searched: nothing in it is ever deleted. A format-1 marker's folders
    are :func:`unrecorded_folders`'."""
    folder = Path(folder)
    listed = {n for n in owner.entries if n in owner.kept or trusted(folder, owner, n)}
    found = [n for n in current_entries(folder) if n not in listed and not _empty_folder(folder / n)]
    if not deep or owner.files is None:
        return found
    recorded = recorded_paths(folder, owner)
    for name in _walked_entries(folder, owner):
        found.extend(
            rel
            for rel in _files_below(folder, name)
            if rel not in recorded and not _semmae_leftover(rel, recorded)
        )
    return found


def recorded_paths(folder: str | Path, owner: Owner) -> set[str]:
    """Every path below ``folder`` that semmae recorded writing: ``owner``'s entries and files, and what the
    markers of semmae folders inside its listed folders record, each prefixed with that folder's path, for a
    folder ``owner`` records writing into (a demo's evaluation, rerun by hand later: its new files are in its own
    marker only). A semmae folder made there by hand that the run never wrote into stays unrecorded."""
    folder = Path(folder)
    recorded = {
        r for r in (*owner.entries, *(owner.files or ())) if r in owner.kept or trusted(folder, owner, r)
    }
    for name in _walked_entries(folder, owner):
        for here, dirs, files in os.walk(folder / name):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(here, d))]
            if OWNER_NAME not in files:
                continue
            try:
                inner = read_owner(here)
            except MarkerError:
                continue
            if inner is None or inner.files is None:
                continue
            prefix = Path(here).relative_to(folder).as_posix()
            if not any(r == prefix or r.startswith(prefix + "/") for r in owner.files or ()):
                continue  # a folder this run never wrote into (a run made there by hand) is not its to delete
            recorded |= {
                f"{prefix}/{rel}" for rel in (*inner.entries, *inner.files) if trusted(here, inner, rel)
            }
    return recorded


def _walked_entries(folder: Path, owner: Owner) -> list[str]:
    """The listed entries that are real folders (not kept stores, not links): those searched and emptied."""
    return [
        n
        for n in owner.entries
        if n not in owner.kept and (folder / n).is_dir() and not (folder / n).is_symlink()
    ]


def unrecorded_folders(folder: str | Path, owner: Owner) -> list[str]:
    """Listed folders whose files a format-1 marker did not record (written by semmae 0.x before every file was
    recorded): ``--overwrite`` cannot tell a user's file inside them from the run's, so it refuses them."""
    if owner.files is not None:
        return []
    folder = Path(folder)
    return [n for n in _walked_entries(folder, owner) if not _empty_folder(folder / n)]


def _semmae_leftover(rel: str, recorded: set[str]) -> bool:
    """A file semmae leaves beside what it records: a nested folder's marker or lock, or the temporary of an atomic
    write of a recorded file (``.<name>.<8 random>.tmp``) that a kill left; never a user's ``.draft.tmp``."""
    from semmae.utils.run_housekeeping import temporary_target

    parent, _, name = rel.rpartition("/")
    if name in _BOOKKEEPING:
        return True
    target = temporary_target(name)
    if target in _BOOKKEEPING:  # a nested folder's marker, killed mid-write
        return True
    return target is not None and (f"{parent}/{target}" if parent else target) in recorded


def _files_below(folder: Path, name: str) -> list[str]:
    """Every file and link below ``folder/name`` (links not followed), as paths relative to ``folder``."""
    found = []
    for here, dirs, files in os.walk(folder / name):
        rel_here = Path(here).relative_to(folder).as_posix()
        for d in list(dirs):
            if os.path.islink(os.path.join(here, d)):
                dirs.remove(d)
                files.append(d)
        found.extend(f"{rel_here}/{f}" for f in files)
    return sorted(found)


def _empty_folder(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def delete_owned(folder: str | Path, owner: Owner) -> list[str]:
    """Delete what ``owner`` records (:func:`recorded_paths`) and return the top-level names removed: each recorded
    file (checked by :func:`safe_path`; a link is unlinked, never followed), each listed top-level file, and then
    each listed folder left holding only semmae's leftovers and empty folders. A kept entry stays (and stays
    listed), and so does a folder still holding anything else. Call :func:`unlisted_entries` (``deep``) and
    :func:`unrecorded_folders` first: the caller refuses a folder that holds anything semmae did not write."""
    folder = Path(folder)

    def unlink(p: Path) -> None:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise UserError(f"--overwrite: cannot delete {p}: {e.strerror or e}") from None

    recorded = recorded_paths(folder, owner) if owner.files is not None else set()
    for rel in sorted((r for r in recorded if "/" in r), key=lambda r: -r.count("/")):
        p = safe_path(folder, rel)
        if p.is_symlink() or p.is_file():
            unlink(p)
    removed = []
    for name in owner.entries:
        if name in owner.kept:
            continue
        p = safe_child(folder, name)
        if p.is_symlink() or p.is_file():
            if not trusted(folder, owner, name):
                continue  # not what semmae wrote there (the caller refused it already): it stays, and listed
            unlink(p)
        elif p.is_dir():
            if owner.files is None:
                raise UserError(
                    f"--overwrite: {p} was written by a semmae that did not record its files; delete it yourself"
                )
            _remove_emptied(folder, name, recorded)
            if p.exists():
                continue
        else:
            continue
        removed.append(name)
    owner.entries = [n for n in owner.entries if n not in removed]
    if owner.files is not None:
        owner.files = [r for r in owner.files if r.split("/", 1)[0] in owner.entries]
    if owner.ids is not None:
        owner.ids = {r: v for r, v in owner.ids.items() if r.split("/", 1)[0] in owner.entries}
    return removed


def _remove_emptied(folder: Path, name: str, recorded: set[str]) -> None:
    """Remove the folders below and at ``folder/name`` that hold nothing but semmae's leftovers (bottom up)."""
    for here, _dirs, files in os.walk(folder / name, topdown=False):
        rel_here = Path(here).relative_to(folder).as_posix()
        try:
            for f in files:
                if _semmae_leftover(f"{rel_here}/{f}", recorded):
                    os.unlink(os.path.join(here, f))
            os.rmdir(here)
        except OSError:
            pass  # something semmae did not write is left there: the folder stays


# -- inputs -------------------------------------------------------------------------------------------------------
def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def input_conflict(target: str | Path, inputs: dict[str, str | None]) -> str | None:
    """How ``target`` (a folder or file semmae would delete or replace) meets an input of the command, or ``None``:
    it is an input, lies inside one, or holds one (``{"--data": path}``; ``None`` values are skipped)."""
    where = _real(target)
    for flag, value in inputs.items():
        if not value:
            continue
        src = _real(value)
        if where == src:
            return f"is {flag} {value}"
        if where in src.parents:
            return f"holds {flag} {value}"
        if src in where.parents:
            return f"lies inside {flag} {value}"
    return None


def check_replace_folder(folder: str | Path, inputs: dict[str, str | None], flag: str = "--out") -> None:
    """Refuse to delete or replace ``folder`` when it is, holds or lies inside an input of the command."""
    why = input_conflict(folder, inputs)
    if why:
        raise UserError(
            f"{flag} {folder} {why}, which this command reads; semmae never deletes its inputs: use another {flag}"
        )


# -- single-file outputs ------------------------------------------------------------------------------------------
def run_folder_above(path: str | Path) -> Path | None:
    """The nearest folder holding ``path`` (the file's own folder included) that is a semmae run or output folder
    (it has an owner marker, or a run lock file from before markers existed), or ``None``."""
    here = _real(path).parent
    for folder in (here, *here.parents):
        if any((folder / name).is_file() for name in _BOOKKEEPING):
            return folder
    return None


def _held_here(folder: Path) -> bool:
    """Whether this process holds the run folder ``folder`` (a stage writing its own figure or metrics)."""

    return folder in _held_folders()


def _held_folders() -> set[Path]:
    """The run folders this process holds (:mod:`semmae.utils.rundir` keeps them; read without importing it, which
    imports this module)."""
    import sys

    rundir = sys.modules.get("semmae.utils.rundir")
    return rundir.held_folders() if rundir is not None else set()


def png_written_by_semmae(path: Path) -> bool:
    """A PNG whose ``Software`` text entry says a semmae verb drew it (:func:`png_info`) and whose seal still holds
    for every other chunk (:mod:`semmae.utils.content_seal`: a figure you retouched or re-saved is yours)."""
    from semmae.utils.content_seal import png_file_sealed

    text = png_file_sealed(path)
    return text is not None and str(text.get("Software", "")).startswith("semmae ")


def png_info(verb: str):
    """PIL ``pnginfo`` that signs a figure as ``semmae <verb>``'s (what lets ``--overwrite`` replace it later)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", f"semmae {verb}")
    return info


def check_output_file(
    path: str | Path,
    *,
    overwrite: bool,
    inputs: dict[str, str | None],
    written_by_semmae: Callable[[Path], bool],
    flag: str = "--out",
) -> Path:
    """Check that single-file output ``path`` may be written (then write it atomically): a new file, or with
    ``overwrite`` one that ``written_by_semmae`` recognises; never an input, never a file inside a run folder or a
    live run. Returns the path."""
    from semmae.utils.run_lock import locked_folder_above

    p = Path(path)
    if str(path).endswith(os.sep) or p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    why = input_conflict(p, inputs)
    if why:
        raise UserError(f"{flag} {path} {why}, which this command reads; semmae never replaces its inputs")
    live = locked_folder_above(p.parent, _held_folders()) if p.parent.exists() else None
    if live is not None:
        raise UserError(
            f"{flag} {path} lies inside {live}, the folder of a run that is still going; use another {flag}"
        )
    run = run_folder_above(p)
    ours = run is not None and _held_here(run)  # a stage writing into the run folder this process holds
    if run is not None and not ours:
        raise UserError(
            f"{flag} {path} lies inside {run}, a folder semmae owns (a run or an export); write it elsewhere"
        )
    if p.is_symlink() or p.exists():
        if not overwrite:
            raise UserError(
                f"{flag} {path} already exists; pass --overwrite to replace it, or choose another name"
            )
        if p.is_symlink() or not p.is_file() or not (ours or written_by_semmae(p)):
            raise UserError(
                f"{flag} {path} exists and semmae did not write it as it is now (yours, changed since, or written "
                "by a semmae before outputs were sealed); --overwrite replaces only semmae's unchanged outputs: "
                "choose another name, or delete the file yourself"
            )
    from semmae.utils.io import expect_output

    expect_output(p)  # re-checked when the output is put in place
    return p


# -- output folders that are not runs -----------------------------------------------------------------------------
def claim_output_folder(
    folder: str | Path,
    *,
    kind: str,
    verb: str,
    what: str,
    inputs: dict[str, str | None],
    overwrite: bool = False,
    rerun: bool = False,
    adopt: Callable[[Path], bool] | None = None,
    flag: str = "--out",
    own_lock: bool = False,
) -> Owner:
    """Check that ``semmae <verb>`` may write the output folder ``folder`` (one that is not a run: an export, a
    converted dataset; ``what`` names it in messages, e.g. ``"a semmae export"``) and return its owner marker: a
    new one for a new or empty folder, which the caller writes with :func:`start_output_folder` at its first write.

    A folder that holds anything is written only if its marker is this verb's (or, for one written before markers
    existed, ``adopt(folder)`` recognises it), it holds nothing the marker does not list and no link among its
    entries (a write would go through it to a folder elsewhere); and then only with ``overwrite``, or ``rerun`` for
    a verb whose rerun keeps what is there. ``overwrite`` never replaces a folder that is, holds or lies inside an
    input of the command. Never inside a run that is still going (``own_lock``: the caller holds ``folder``'s
    one-writer lock itself, so only the folders above count). Nothing is written here; refusals are one line."""
    from semmae.utils.run_lock import locked_folder_above

    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise UserError(f"{flag} {folder} is a broken link; give a folder")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file; give a folder")
    here = next((p for p in (folder.parent if own_lock else folder, *folder.parents) if p.exists()), None)
    live = locked_folder_above(here, _held_folders()) if here is not None else None
    if live is not None:
        raise UserError(
            f"{flag} {folder} lies inside {live}, the folder of a run that is still going; use another {flag}"
        )
    owner = read_owner(folder) if folder.is_dir() else None
    entries = current_entries(folder, temporaries=owner is None) if folder.is_dir() else []
    if owner is not None and not owner.describes(kind, verb):
        what_it_is = "run" if owner.kind == "run" else owner.kind
        raise UserError(
            f"{flag} {folder} holds a `semmae {owner.verb}` {what_it_is}, not {what}; use another {flag}"
        )
    if not entries:
        return owner or Owner(kind=kind, verb=verb)
    listing = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
    if owner is None:
        if adopt is None or not adopt(folder):
            raise UserError(
                f"{flag} {folder} holds {listing} and is not {what} (no {OWNER_NAME}); semmae writes only into a "
                f"new or empty folder or one it made: give a new or empty {flag}"
            )
        # written before markers existed (or copied without its marker): nothing proves which of its files semmae
        # wrote (a README.md of yours beside an export's config.json), so it is never replaced, only rerun into
        if overwrite or not rerun:
            raise UserError(
                f"{flag} {folder} holds {listing}, which looks like {what} but has no {OWNER_NAME} (written by a "
                f"semmae without owner markers, or copied without it): nothing proves which files semmae wrote, so "
                f"delete it yourself or choose another {flag}"
            )
        owner = Owner(kind=kind, verb=verb, entries=list(entries), files=None)
    if not (overwrite or rerun):
        raise UserError(
            f"{flag} {folder} already holds {what}; pass --overwrite to replace it, or choose another {flag}"
        )
    if overwrite:
        from semmae.utils.run_lock import locked_folder_below

        check_replace_folder(folder, inputs, flag)
        below = locked_folder_below(folder, _held_folders())
        if below is not None:
            raise UserError(
                f"{flag} {folder} holds {below}, the folder of a run that is still going; use another {flag}"
            )
        unrecorded = unrecorded_folders(folder, owner)
        if unrecorded:
            raise UserError(
                f"{flag} {folder} holds {', '.join(unrecorded[:4])}, a folder whose files an older semmae did not "
                f"record; --overwrite deletes only files semmae recorded, so delete it yourself or choose another "
                f"{flag}"
            )
    foreign = unlisted_entries(folder, owner, deep=overwrite)
    if foreign:
        raise UserError(
            f"{flag} {folder} holds {', '.join(foreign[:4])}, which semmae {verb} did not write; it replaces only "
            f"its own files, so move them out first or choose another {flag}"
        )
    links = [n for n in entries if (folder / n).is_symlink()]
    if links:
        raise UserError(
            f"{flag} {folder} holds {', '.join(links[:4])}, a link semmae did not make (writing there would "
            f"write into {os.path.realpath(folder / links[0])}); remove the link or choose another {flag}"
        )
    return owner


def start_output_folder(folder: str | Path, owner: Owner, names: Iterable[str]) -> None:
    """The first write into an output folder :func:`claim_output_folder` accepted: create it and write its marker,
    listing ``names`` (the entries the verb is about to write), so an interrupted write leaves a folder a rerun
    with ``--overwrite`` may replace. What the marker lists beyond ``names`` (an earlier export of the other kind
    that ``--overwrite`` replaces: a part learner's ``parts.json`` under a timm folder's files) is deleted first,
    so the folder never mixes two outputs."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {e.strerror or e}") from None
    names = set(names)
    from semmae.utils.run_housekeeping import remove_orphaned_temporaries

    # what an earlier export killed mid-write left: temporaries of its own files (and of its marker), never a
    # ``.draft.tmp`` of yours
    ours = names | set(owner.entries) | set(owner.files or ()) | {OWNER_NAME}
    remove_orphaned_temporaries(folder, written_for=ours.__contains__)
    tops = {n.split("/", 1)[0] for n in names}
    stale = Owner(
        kind=owner.kind,
        verb=owner.verb,
        entries=[n for n in owner.entries if n not in tops],
        files=owner.files,
    )
    if stale.entries:
        delete_owned(folder, stale)
    owner.entries = sorted(tops)
    owner.files = sorted(n for n in names if "/" in n)
    owner.ids = {}  # each file's identity is recorded as it is written (:func:`note_output_identity`)
    owner.home = folder_identity(folder)
    write_owner(folder, owner)
    _writing[Path(os.path.abspath(folder))] = owner


#: output folders (not runs) this process is writing now, with their markers: an atomic write into one records
#: the identity of the file it writes (:func:`note_output_identity`)
_writing: dict[Path, Owner] = {}


def writing_folders() -> list[Path]:
    """The output folders (not runs) this process is writing now."""
    return list(_writing)


def end_output_folder(folder: str | Path) -> None:
    """The verb that :func:`start_output_folder` began has stopped writing ``folder``."""
    _writing.pop(Path(os.path.abspath(folder)), None)


def note_output_identity(path: str | Path, ident: list) -> None:
    """semmae is about to put the file whose identity is ``ident`` at ``path``: an output folder being written
    records it (``path`` outside every such folder: nothing)."""
    path = Path(os.path.abspath(path))
    for folder, owner in _writing.items():
        try:
            rel = path.relative_to(folder).as_posix()
        except ValueError:
            continue
        if rel in (*owner.entries, *(owner.files or ())) and record_identity(owner, rel, ident):
            write_owner(folder, owner)


def log_hint(folder: str | Path, names: Iterable[str]) -> str:
    """For a refusal naming ``names`` of run folder ``folder``: where its ``log.jsonl`` holds a line semmae did not
    write, which line, and the way out that keeps the log (``""`` otherwise)."""
    for rel in names:
        if rel.rpartition("/")[2] == LOG_NAME:
            line = foreign_log_line(Path(folder) / rel)
            if line:
                return (
                    f": {rel} line {line} is not one of semmae's records; if you added it, delete that line and "
                    "run again (the run's log stays)"
                )
    return ""
