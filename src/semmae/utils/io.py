"""Atomic, plain-data file I/O.

Checkpoints hold only plain data (tensors, numbers, strings, lists, dicts) so that every one loads with
``torch.load(..., weights_only=True)``. Writes go to a temporary file in the same folder, are flushed to disk
and then renamed over the target, so a reader never sees a half-written file and an interrupted write loses
nothing that was already there. A full disk or unwritable folder becomes a :class:`UserError` naming the path.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semmae.errors import UserError

#: a pretraining or bootstrap run's step checkpoints, ``<out>/checkpoints/ckpt-<step>.pth``, whose ``latest`` file
#: names the newest (:class:`semmae.engine.checkpoint.CheckpointManager` writes them)
STEP_CHECKPOINT_RE = re.compile(r"^ckpt-(\d+)\.pth$")
#: the checkpoint of any other stage's run folder, in the order looked for: `segment train`'s final file, then the
#: one file `parts train`, `segment train`, `linprobe` and `finetune` keep
RUN_CHECKPOINT_NAMES = ("seg_final.pth", "checkpoint.pth")


def _atomic_write(
    path: str | Path, write: Callable[[Any], None], mode: str = "wb", appended: bool = False
) -> None:
    path = Path(path)
    rundir = _rundir()
    if rundir is not None:
        rundir.check_may_replace(path)  # a user's file where a held run folder writes is never replaced
        # recorded before it exists: a kill between the rename and the marker's update would leave it unrecorded
        rundir.note_written(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), _new_file_mode(path))  # mkstemp's 0600 -> what open() would have made
            os.fsync(fh.fileno())
        # recorded before the rename: a kill after it leaves a file the marker knows
        _note_identities([(path, tmp)], appended=appended)
        _put_in_place(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path}: {e.strerror or e} (the previous file, if any, is untouched)"
        ) from None
    except RuntimeError as e:
        # torch.save's zip writer reports a failed write (a full disk, mostly) as a RuntimeError, not an OSError
        if not re.search(r"inline_container|PytorchStreamWriter|writ", str(e), re.IGNORECASE):
            Path(tmp).unlink(missing_ok=True)
            raise
        Path(tmp).unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path}: {_write_failure_cause(path.parent)} (the previous file, if any, is untouched)"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: single-file outputs that :func:`semmae.utils.ownership.check_output_file` allowed, by absolute path: what was
#: there then (its identity), or ``None`` (nothing). The write that follows re-checks it at the rename.
_EXPECTED_OUTPUTS: dict[str, list | None] = {}


def expect_output(path: str | Path) -> None:
    """``path`` may be written as it is now (checked by the ownership rule): the atomic write of it that follows
    puts its file in place only if nothing changed there since (a file you put at that name while semmae worked
    stays yours)."""
    from semmae.utils.file_identity import identity

    _sweep_link_leftovers(Path(path))
    _EXPECTED_OUTPUTS[os.path.abspath(path)] = identity(path) if os.path.lexists(path) else None


def _sweep_link_leftovers(path: Path) -> None:
    """Delete the temporaries of ``path`` that a write killed between its hard link and its unlink left: exactly
    those that are another name of the file at ``path`` (same inode), so nothing is lost."""
    try:
        st = os.lstat(path)
        names = os.listdir(path.parent)
    except OSError:
        return
    if st.st_nlink < 2:
        return
    for name in names:
        if name.startswith(f".{path.name}.") and name.endswith(".tmp"):
            tmp = path.parent / name
            try:
                other = os.lstat(tmp)
                if other.st_ino == st.st_ino and other.st_dev == st.st_dev:
                    os.unlink(tmp)
            except OSError:
                pass


def forget_expected_outputs() -> None:
    """A new command: no output of an earlier one (in this process) is expected any more."""
    _EXPECTED_OUTPUTS.clear()


def _put_in_place(tmp: str, path: Path) -> None:
    """Rename ``tmp`` to ``path``; for an output :func:`expect_output` named, only while ``path`` is still what it
    was then: nothing (then a hard link puts the file there, which never replaces one that appeared since), or
    the same file."""
    from semmae.utils.file_identity import matches

    key = os.path.abspath(path)
    if key not in _EXPECTED_OUTPUTS:
        os.replace(tmp, path)
        return
    expected = _EXPECTED_OUTPUTS[key]
    changed = UserError(
        f"{path} changed while semmae was writing it (a file was put there since it was checked); it was left "
        "alone and this output was not written: move it out, or choose another name, and rerun"
    )
    if expected is None:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise changed from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EACCES):
                raise
            if os.path.lexists(path):  # no hard links on this file system: the check, then the rename
                raise changed from None
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    else:
        if not matches(path, [expected], same_folder=True):
            raise changed
        os.replace(tmp, path)
    _EXPECTED_OUTPUTS.pop(key, None)


def open_for_append(path: str | Path):
    """``open(path, "a")`` that never writes through a link (a ``log.jsonl`` replaced by a link to a user's file):
    the link is refused with an ``OSError`` naming it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, "it is a link, and semmae never writes through one", str(path)
            ) from None
        raise
    return os.fdopen(fd, "a")


def _rundir():
    """:mod:`semmae.utils.rundir` when it is loaded (by every verb that holds a run folder), else ``None``."""
    import sys

    return sys.modules.get("semmae.utils.rundir")


def written_by_the_run_around(path: str | Path) -> bool:
    """Whether a run folder this process holds records ``path`` as a file its run wrote (and it still is)."""
    rundir = _rundir()
    return bool(rundir is not None and rundir.recorded_by_its_run(path))


def check_may_append(path: str | Path) -> None:
    """Refuse (one line) to append to ``path`` inside a held run folder unless it is still the file the run
    wrote there (a ``log.jsonl`` a user put in its place while the run was going stays theirs)."""
    rundir = _rundir()
    if rundir is not None:
        rundir.check_may_append(path)


def check_may_replace(*paths: str | Path) -> None:
    """Refuse (one line) when any of ``paths`` is a file inside a run folder this process holds that the run did
    not write (:func:`semmae.utils.rundir.check_may_replace`): a writer that does not go through the atomic writes
    here checks the files it is about to replace."""
    rundir = _rundir()
    if rundir is not None:
        for path in paths:
            rundir.check_may_replace(path)


def note_written(*paths: str | Path) -> None:
    """Tell the run folders this process holds (if any) that semmae writes at ``paths``, for their owner markers:
    atomic writes do it themselves; a writer that fills a folder file by file names each file before writing it."""
    rundir = _rundir()
    if rundir is not None:
        rundir.note_written(*paths)


def note_event_token(folder: str | Path, token: str) -> None:
    """Tell the run folders this process holds that a TensorBoard writer is about to open in ``folder`` and end
    its event file's name with ``.<token>`` (:func:`semmae.utils.rundir.note_event_token`)."""
    rundir = _rundir()
    if rundir is not None:
        rundir.note_event_token(folder, token)


def _note_identities(
    items: list[tuple[Path, str | Path]], appended: bool = False, grown: bool = False
) -> None:
    """Each ``(path, source)``: the file at ``source`` is (or is about to be renamed to) ``path``; the owner markers
    of the folders this process is writing that hold ``path`` (a run's, an export's) record its identity, with one
    marker write per folder (``appended``: a file semmae appends to, known by its first bytes; ``grown``: the file
    at ``path`` itself, grown by an append, recorded only when no recorded identity still matches it)."""
    import sys

    from semmae.utils.file_identity import identity

    rundir = _rundir()
    ownership = sys.modules.get("semmae.utils.ownership")  # loaded by every verb that writes an output folder
    outputs = ownership is not None and ownership.writing_folders()
    if not outputs and (rundir is None or not rundir.held_folders()):
        return
    found = [(path, ident) for path, source in items if (ident := identity(source, appended)) is not None]
    if rundir is not None:
        rundir.note_identity(found, grown)
    if outputs:
        for path, ident in found:
            ownership.note_output_identity(path, ident)


def note_identity(*paths: str | Path, appended: bool = False) -> None:
    """semmae has written the files at ``paths``, which it named before writing them (:func:`note_written`): the
    markers of the folders holding them record what the files are now, so a file put at one of these names later
    is never taken for semmae's. ``appended``: a file semmae goes on appending to (``log.jsonl``, an event file),
    recorded again only when its recorded identity no longer matches (its first bytes never change)."""
    _note_identities([(Path(p), p) for p in paths], appended, grown=appended)


def note_identity_as(pairs: list[tuple[str | Path, str | Path]]) -> None:
    """:func:`note_identity` for files that semmae is about to rename: each ``(path, source)``, the file at
    ``source`` renamed to ``path`` next (a rename keeps what identifies it)."""
    _note_identities([(Path(p), s) for p, s in pairs])


def forget_written(*paths: str | Path) -> None:
    """Tell the run folders this process holds that semmae itself deleted or renamed ``paths``: no longer its."""
    rundir = _rundir()
    if rundir is not None:
        rundir.forget_written(*paths)


@contextlib.contextmanager
def naming_os_errors(path: str | Path):
    """An ``OSError`` inside the block that names no file (a write to an open file object: a full disk) is
    re-raised naming ``path``, so the one-line message says which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.strerror:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _new_file_mode(path: Path) -> int:
    """The permissions of a file written in place: the old file's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_failure_cause(folder: Path) -> str:
    """Why a write failed when the writer did not say (torch's zip writer): a full disk when it is one."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "the write failed"
    if free < 64 << 20:
        return f"No space left on device ({free // 2**20} MiB free)"
    return "the write failed (disk full, quota or I/O error)"


def atomic_write_bytes(path: str | Path, data: bytes, appended: bool = False) -> None:
    """``appended``: a file semmae goes on appending to (``log.jsonl``): its marker knows it by its first bytes."""
    _atomic_write(path, lambda fh: fh.write(data), appended=appended)


def atomic_write_text(path: str | Path, text: str, appended: bool = False) -> None:
    """UTF-8; a file name that is not UTF-8 (decoded with surrogateescape) is written back as its bytes."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), appended=appended)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_figure(fig: Any, path: str | Path, **savefig: Any) -> None:
    """Save a matplotlib figure atomically (rendered in memory, in the format its suffix names): a crash or a full
    disk leaves the earlier file whole, never a truncated one."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temp file + rename."""
    import torch  # here and in load_checkpoint only: configs read checkpoint_file without torch

    _atomic_write(path, lambda fh: torch.save(obj, fh))


def step_checkpoints(folder: str | Path) -> list[Path]:
    """The ``ckpt-<step>.pth`` files of a ``checkpoints/`` folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_step_checkpoint(folder: str | Path) -> Path | None:
    """The file a ``checkpoints/`` folder's ``latest`` names, else its newest ``ckpt-<step>.pth``, else None."""
    pointer = Path(folder) / "latest"
    if pointer.is_file():
        target = Path(folder) / pointer.read_text().strip()
        if target.is_file():
            return target
    files = step_checkpoints(folder)
    return files[-1] if files else None


#: files that make a folder an exported model rather than a run folder (semmae.models.timm_dir, semmae.export.part_learner)
EXPORTED_FOLDER_MARKERS = ("config.json", "parts.json")


def checkpoint_file(path: str | Path) -> Path:
    """What a checkpoint argument means, for every ``--checkpoint`` / ``--encoder-checkpoint`` and Python loader:
    a file as given (also one that does not exist: its loader says so), or a run folder -> the checkpoint its run
    wrote last: ``checkpoints/latest`` (pretrain, bootstrap; also the ``checkpoints/`` folder itself), else one
    of :data:`RUN_CHECKPOINT_NAMES`; or a remote name (``hf-hub:ORG/NAME``, ``https://...[#sha256=HEX]``) -> the
    cached download (:mod:`semmae.utils.remote`)."""
    if ":" in str(path):
        from semmae.utils.remote import fetch_checkpoint, is_remote

        if is_remote(path):
            return fetch_checkpoint(path)
    path = Path(path)
    if not path.is_dir() or any((path / marker).is_file() for marker in EXPORTED_FOLDER_MARKERS):
        return path  # a file, or a folder `semmae export` wrote (a timm model / part learner): read as it is
    run = path.parent if path.name == "checkpoints" else path
    found = latest_step_checkpoint(run / "checkpoints")
    found = found or next((run / n for n in RUN_CHECKPOINT_NAMES if (run / n).is_file()), None)
    if found is None:
        raise UserError(
            f"{path} is a folder without a checkpoint (looked for checkpoints/latest, checkpoints/ckpt-*.pth, "
            f"{', '.join(RUN_CHECKPOINT_NAMES)}): give a checkpoint file or a run folder"
        )
    return found


def load_checkpoint(path: str | Path, allow_namespace: bool = False) -> Any:
    """Load a checkpoint with ``weights_only=True``.

    Args:
        path: the ``.pth``/``.pt`` file, a run folder or a remote name (:func:`checkpoint_file`).
        allow_namespace: also accept a pickled ``argparse.Namespace`` (as the official MAE, SemMAE, DINO and iBOT
            releases store their arguments). Only that one class is allow-listed; everything else stays refused,
            so the safe default is kept for arbitrary code.
    """
    import torch

    path = checkpoint_file(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise UserError(
            f"checkpoint {path} is a folder `semmae export` wrote, not a checkpoint file; this command needs a "
            "training checkpoint (.pth) or its run folder (evaluation verbs also read the folder's model.safetensors)"
        )
    safe = [argparse.Namespace] if allow_namespace else []
    try:
        with torch.serialization.safe_globals(safe), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        text = str(e)
        blocked = re.search(r"unsupported GLOBAL ([\w.]+) whose module ([\w.]+) is blocked", text)
        code = [blocked.group(1)] if blocked else _code_globals(path)
        if code:
            raise UserError(
                f"checkpoint {path} was refused: loading it would run code ({', '.join(code[:3])}); "
                "only plain-data checkpoints are loaded (torch.load weights_only=True)"
            ) from None
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if unsupported:
            raise UserError(
                f"checkpoint {path} holds a pickled {unsupported.group(1)}, not plain data, and was "
                "refused (torch.load weights_only=True)"
            ) from None
        detail = re.search(r"invalid load key[^\n]*|PytorchStreamReader failed[^.]*", text)
        reason = detail.group(0).strip() if detail else type(e).__name__
        raise UserError(
            f"checkpoint {path} cannot be read (corrupt or not a PyTorch file): {reason}"
        ) from None


#: modules whose functions a pickle can call to run arbitrary code
_CODE_MODULES = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "builtins",
    "__builtin__",
    "sys",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "pty",
    "code",
    "ctypes",
    "webbrowser",
    "pickle",
    "marshal",
    "types",
    "operator",
    "functools",
)


def _code_globals(path: Path, limit: int = 64 << 20) -> list[str]:
    """``module.name`` of the callables a legacy (non-zip) pickle file imports from code-running modules, found
    by reading its opcodes without executing any (``pickletools``); ``[]`` for a zip checkpoint or a clean file."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path) or path.stat().st_size > limit:
            return []
        found, strings = [], []
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
                if op.name == "STOP":
                    break
    except Exception:  # noqa: BLE001 - not a readable pickle: let the caller call it corrupt
        return []
    return [g for g in found if g.split(".")[0] in _CODE_MODULES]


def read_json(path: str | Path, missing: str | None = None, hint: str = "") -> Any:
    """The JSON in ``path``; a :class:`UserError` when the file is missing (``missing``, else "does not exist") or
    is not JSON (then ``hint`` follows the parser's message)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(missing or f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}{hint}") from None
