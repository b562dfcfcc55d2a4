"""The part-map cache: what part learning (paper Sec. 3.1) hands to semantic-guided masking (Sec. 3.2).

For every image of a dataset (in :class:`~semmae.data.folder.ImageFolderDataset` order) it stores, per cell of a
``G x G`` grid, the argmax part id and a foreground score, packed in ONE byte per cell::

    code = part_id << fg_bits | round(fg * (2**fg_bits - 1))

with ``part_bits = ceil(log2(num_parts + 1))`` (ids ``0..num_parts-1`` are parts, ``num_parts`` is the reserved
"no part" id) and ``fg_bits = 8 - part_bits`` (6 parts: 3 + 5 bits, 32 foreground levels). A 28x28 grid thus
costs 784 bytes per image; the official SemMAE release stored 196 x 975 float32 = 764 KB per image.

Layout of a cache folder::

    meta.json    format version, grid, num_parts, bit split, image count, file-list digest, content fingerprint,
                 producer
    files.txt    the dataset's relative file list (to explain a mismatch)
    codes.u8     uint8 [num_images, G * G], memory-mapped by every DataLoader worker
    crc32.u32    uint32 [num_images]: the CRC-32 of each image's G * G codes (format 2)
    sizes.u64    uint64 [num_images]: each image file's size in bytes when the cache was made (format 2)

Writing happens in ``<path>.partial/`` chunk by chunk with a progress record after each chunk; an interrupted
write resumes where it stopped, and only :meth:`PartCacheWriter.finalize` renames the folder to ``<path>``, so a
reader never sees a half-written cache.

What a reader checks, each failure one :class:`UserError` naming the cache: ``meta.json`` parses and holds every
field with a sane value; the files have the sizes the meta implies; the file list is the dataset's (same names,
same order); the images are the same (their sizes match the fingerprint: a cache made for other images with the
same names is refused); and every image's codes match their checksum and decode to part ids ``<= num_parts``
when read. Format-1 caches (before checksums) are still read, with a note: their codes are range-checked only.

A reader holds its cache for as long as it has it open: :meth:`PartCache.open` takes a shared ``fcntl.flock`` on
the cache's ``meta.json`` (a read-only open: it works on a cache the reader may not write), kept until the
:class:`PartCache` is released or garbage-collected or the process ends in any way (the operating system drops it).
``parts export --overwrite`` takes the exclusive lock on that file before it deletes anything and is refused in one
line while any reader (a pretrain, a pack, an evaluation) holds it; a reader that finds an export replacing the
cache is refused the same way.

``--overwrite`` deletes exactly a cache's own files (:data:`CACHE_FILES`, ``progress.json``, and the atomic-write
temporaries of its JSON and text files), never a symlink's target, and only in a folder that holds nothing else
(:func:`not_a_cache`); then the emptied folder itself.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semmae.data.folder import file_list_digest
from semmae.errors import UserError
from semmae.utils.content_seal import json_file_sealed, sealed_json
from semmae.utils.io import (
    atomic_write_json,
    atomic_write_text,
    forget_written,
    note_identity,
    note_identity_as,
    note_written,
    sha256_file,
)
from semmae.utils.rundir import live_lock_above

FORMAT_VERSION = 2  # 2: per-image CRC-32 + file-size fingerprint; 1 (still read): neither
READABLE_VERSIONS = (1, 2)
MAX_PARTS = 15  # keeps at least 4 foreground bits
FINGERPRINT_KIND = "file sizes"
REBUILD_HINT = "re-export it with `semmae parts export ... --overwrite`"


def _bits(num_parts: int) -> tuple[int, int]:
    if not 1 <= num_parts <= MAX_PARTS:
        raise UserError(f"a part cache holds 1..{MAX_PARTS} parts, got {num_parts}")
    part_bits = max(1, math.ceil(math.log2(num_parts + 1)))
    return part_bits, 8 - part_bits


def encode_cells(
    part_ids: np.ndarray | torch.Tensor, fg: np.ndarray | torch.Tensor, num_parts: int
) -> np.ndarray:
    """Pack part ids (ints in ``0..num_parts``) and foreground scores (in [0, 1]) into uint8 codes."""
    _, fg_bits = _bits(num_parts)
    part_ids = np.asarray(part_ids, dtype=np.int64)
    fg = np.asarray(fg, dtype=np.float64)
    if part_ids.min(initial=0) < 0 or part_ids.max(initial=0) > num_parts:
        raise ValueError(f"part ids must lie in 0..{num_parts} ({num_parts} = no part)")
    if not np.isfinite(fg).all() or fg.min(initial=0) < 0 or fg.max(initial=0) > 1:
        raise ValueError("foreground scores must be finite and lie in [0, 1]")
    levels = (1 << fg_bits) - 1
    return ((part_ids << fg_bits) | np.rint(fg * levels).astype(np.int64)).astype(np.uint8)


def decode_cells(codes: np.ndarray, num_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_cells`: ``(part_ids uint8, fg float32)``."""
    _, fg_bits = _bits(num_parts)
    levels = (1 << fg_bits) - 1
    codes = np.asarray(codes, dtype=np.uint8)
    return (codes >> fg_bits).astype(np.uint8), (codes & levels).astype(np.float32) / levels


class PartCache:
    """Read side of the cache; create one with :meth:`create`, read one with :meth:`open`.

    ``cache[i] -> (part_ids uint8 [G, G], fg float32 [G, G])``.
    """

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = meta
        self.grid = int(meta["grid"])
        self.num_parts = int(meta["num_parts"])
        self.no_part_id = self.num_parts
        self.has_checksums = int(meta["format_version"]) >= 2
        self._codes: np.memmap | None = None  # opened lazily, once per process (DataLoader workers)
        self._crc: np.memmap | None = None
        self._lock_fd: int | None = None  # the shared lock on meta.json a reader holds (see the module doc)

    # -- construction ---------------------------------------------------------------------------------------
    @staticmethod
    def create(
        path: str | Path,
        relative_paths: list[str],
        grid: int,
        num_parts: int,
        producer: dict[str, Any] | None = None,
        overwrite: bool = False,
        root: str | Path | None = None,
    ) -> PartCacheWriter:
        """Start (or resume) writing a cache for a dataset's file list (``root``: the dataset folder, whose file
        sizes become the cache's content fingerprint). See :class:`PartCacheWriter`."""
        return PartCacheWriter(Path(path), relative_paths, grid, num_parts, producer or {}, overwrite, root)

    @staticmethod
    def open(
        path: str | Path,
        relative_paths: list[str] | None = None,
        root: str | Path | None = None,
        lock: bool = True,
    ) -> PartCache:
        """Open a finished cache; with ``relative_paths``, refuse it unless it was made for that file list, and
        with ``root`` (the dataset folder) also unless it was made for the same images (file sizes). ``lock``:
        hold the cache's shared reader lock while the returned object lives (``parts export --overwrite`` is
        refused meanwhile); :meth:`release` drops it early."""
        path = Path(path)
        fd = _hold_for_reading(path) if lock else None
        try:
            cache = PartCache._open_checked(path, relative_paths, root)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        cache._lock_fd = fd
        return cache

    @staticmethod
    def _open_checked(path: Path, relative_paths: list[str] | None, root: str | Path | None) -> PartCache:
        _check_exists(path)
        meta = _read_meta(path)
        cells = meta["grid"] ** 2
        n = meta["num_images"]
        _check_size(path, "codes.u8", n * cells, f"{n} images x {cells} cells")
        if meta["format_version"] >= 2:
            _check_size(path, "crc32.u32", n * 4, f"{n} images x 4 bytes")
        else:
            print(
                f"note: part cache {path} has format 1 (no checksums): damaged codes are caught only when they "
                f"are out of range; {REBUILD_HINT} to add checksums and a content fingerprint",
                file=sys.stderr,
                flush=True,
            )
        cache = PartCache(path, meta)
        if relative_paths is not None:
            cache.check_matches(relative_paths, root)
        return cache

    def release(self) -> None:
        """Drop the reader lock (if held); the cache can still be read, but is no longer protected."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass

    def check_matches(self, relative_paths: list[str], root: str | Path | None = None) -> None:
        """Raise UserError unless the cache was written for exactly this file list (same files, same order) and,
        given the dataset's ``root`` and a cache that records them, the same file sizes."""
        if file_list_digest(relative_paths) == self.meta["file_list_digest"]:
            if root is not None:
                self._check_fingerprint(relative_paths, Path(root))
            return
        theirs = (
            (self.path / "files.txt").read_text(errors="surrogateescape").splitlines()
            if (self.path / "files.txt").exists()
            else []
        )
        detail = f"the cache has {self.meta['num_images']} images, the dataset {len(relative_paths)}"
        for i, (a, b) in enumerate(zip(theirs, relative_paths)):
            if a != b:
                detail += f"; first difference at index {i}: cache {a!r} vs dataset {b!r}"
                break
        raise UserError(
            f"part cache {self.path} was made for a different dataset ({detail}); re-export it for "
            "this dataset"
        )

    def _check_fingerprint(self, relative_paths: list[str], root: Path) -> None:
        fingerprint = self.meta.get("content_fingerprint")
        sizes_path = self.path / "sizes.u64"
        if not fingerprint or not sizes_path.is_file():
            return  # a format-1 cache, or one written without the dataset folder: nothing to compare
        sizes = file_sizes(root, relative_paths)
        if _sizes_digest(sizes) == fingerprint.get("digest"):
            return
        theirs = np.fromfile(sizes_path, dtype=np.uint64)
        detail = ""
        for i, (a, b) in enumerate(zip(theirs.tolist(), sizes.tolist())):
            if a != b:
                detail = f"; first difference: {relative_paths[i]} has {b} bytes, the cache's image had {a}"
                break
        raise UserError(
            f"part cache {self.path} was made for other images with the same file names{detail}; "
            f"{REBUILD_HINT} for this dataset"
        )

    # -- reading --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.meta["num_images"])

    def _array(self) -> np.memmap:
        if self._codes is None:
            self._codes = np.memmap(
                self.path / "codes.u8", dtype=np.uint8, mode="r", shape=(len(self), self.grid * self.grid)
            )
            if self.has_checksums:
                self._crc = np.memmap(self.path / "crc32.u32", dtype="<u4", mode="r", shape=(len(self),))
        return self._codes

    def codes(self, index: int) -> np.ndarray:
        """Image ``index``'s raw codes (uint8 ``[G * G]``), checked against its checksum and the part range."""
        if not 0 <= index < len(self):
            raise IndexError(f"part cache index {index} out of range 0..{len(self) - 1}")
        row = np.asarray(self._array()[index])
        if self._crc is not None and zlib.crc32(row.tobytes()) != int(self._crc[index]):
            raise UserError(
                f"part cache {self.path} is damaged: the part maps of image {index} fail their checksum; "
                f"{REBUILD_HINT}"
            )
        part_bits, fg_bits = _bits(self.num_parts)
        top = int(row.max(initial=0)) >> fg_bits
        if top > self.num_parts:
            raise UserError(
                f"part cache {self.path} is damaged: image {index} holds part id {top}, the cache has "
                f"{self.num_parts} parts (ids 0..{self.num_parts}); {REBUILD_HINT}"
            )
        return row

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        part, fg = decode_cells(self.codes(index), self.num_parts)
        g = self.grid
        return torch.from_numpy(part.reshape(g, g)), torch.from_numpy(fg.reshape(g, g))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open the memmap themselves
        state = self.__dict__.copy()
        state["_codes"] = None
        state["_crc"] = None
        state["_lock_fd"] = None  # the lock stays with the process that opened the cache
        return state

    @property
    def bytes_per_image(self) -> int:
        return self.grid * self.grid


#: what a cache folder holds (``progress.json`` only while unfinished)
CACHE_FILES = ("meta.json", "files.txt", "codes.u8", "crc32.u32", "sizes.u64")
#: the atomic-write temporaries (:mod:`semmae.utils.io`) of a cache's own files, left by a killed export
_OWN_TEMPORARY = re.compile(r"^\.(meta\.json|files\.txt|progress\.json)\.[A-Za-z0-9_]+\.tmp$")


def _is_own(name: str, unfinished: bool, folder: Path | None = None) -> bool:
    """Whether ``name`` in a cache folder is the cache's: its files, an export's progress record and
    temporaries, and (``folder`` given) the ``part_metrics.json`` that ``semmae parts eval`` wrote into it."""
    if name in CACHE_FILES or (unfinished and name == "progress.json") or _OWN_TEMPORARY.match(name):
        return True
    return (
        folder is not None
        and not unfinished
        and name == METRICS_NAME
        and metrics_of_parts_eval(folder / name)
    )


#: the report ``semmae parts eval`` writes into the cache folder it scores (without ``--out``)
METRICS_NAME = "part_metrics.json"


def metrics_of_parts_eval(path: Path) -> bool:
    """A plain metrics JSON file that ``semmae parts eval`` wrote, as it wrote it: its ``meta`` says so and its
    seal holds (:mod:`semmae.utils.content_seal`; never a user's file, nor one a user edited since)."""
    doc = json_file_sealed(path)
    meta = doc.get("meta") if doc is not None else None
    return isinstance(meta, dict) and meta.get("written_by") == "semmae parts eval"


def not_a_cache(path: Path, unfinished: bool = False) -> str | None:
    """Why ``path`` is not a part cache (``unfinished``: an export's ``.partial`` folder), or None when it is one:
    a folder of only a cache's files (plain files, no symlinks), with a ``meta.json`` that has the cache's format
    fields (an export writes it first). The marker an export checks before it deletes or writes anything there."""
    if not path.is_dir() or path.is_symlink():
        return "is not a folder"
    entries = list(path.iterdir())
    foreign = sorted(p.name for p in entries if not _is_own(p.name, unfinished, path))
    foreign += sorted(
        p.name for p in entries if _is_own(p.name, unfinished, path) and (p.is_symlink() or not p.is_file())
    )
    if foreign:
        return f"holds {', '.join(foreign[:4])}{' and more' if len(foreign) > 4 else ''}"
    if not entries:
        return None  # an empty folder: nothing there to lose (an --overwrite killed at its end leaves one)
    if unfinished and not [p for p in entries if not _OWN_TEMPORARY.match(p.name)]:
        return None  # an export stopped before it wrote its meta.json: nothing there but its temporaries
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return "has no readable meta.json"
    if not isinstance(meta, dict) or not {"format_version", "grid", "num_parts", "file_list_digest"} <= set(
        meta
    ):
        return "has a meta.json without a part cache's format fields"
    if json_file_sealed(path / "meta.json") is None:
        return (
            "has a meta.json that is not as an export wrote it (changed since, or written by a semmae before "
            "seals: delete that cache yourself)"
        )
    if unfinished:
        return None  # its files are being filled in; a finished cache records what they hold
    digests = meta.get("files_sha256")
    if not isinstance(digests, dict):
        return "has a meta.json without its files' digests (written by an older semmae: delete that cache yourself)"
    changed = [
        name
        for name in CACHE_FILES
        if name in digests and (path / name).is_file() and sha256_file(path / name) != digests[name]
    ]
    if changed:
        return f"holds {', '.join(changed)}, which is not as the export wrote it (changed since)"
    return None


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _check_exists(path: Path) -> None:
    """Refuse (one line) a ``path`` that is not a finished cache folder with a ``meta.json``."""
    if not path.exists():
        if _partial_path(path).exists():
            raise UserError(
                f"part cache {path} is unfinished (an export was interrupted); rerun the export with "
                "the same arguments to resume it"
            )
        raise UserError(f"part cache {path} does not exist")
    if not path.is_dir() or not (path / "meta.json").is_file():
        raise UserError(f"{path} is not a part cache (no meta.json); create one with `semmae parts export`")


_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _lock_meta(path: Path, operation: int) -> int | None:
    """A descriptor of ``path/meta.json`` holding the non-blocking ``flock`` ``operation``; None when the file
    was removed or replaced while we locked it (the caller looks again). A busy lock raises BlockingIOError; a
    filesystem without ``flock`` gives the descriptor unlocked (nothing to coordinate with there)."""
    meta_path = path / "meta.json"
    try:
        try:  # a writer opens it for writing where it may (where flock is emulated, an exclusive lock needs that)
            fd = os.open(meta_path, os.O_RDWR if operation == fcntl.LOCK_EX else os.O_RDONLY)
        except PermissionError:
            fd = os.open(meta_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"part cache {path}: cannot open meta.json: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _BUSY:
            os.close(fd)
            raise BlockingIOError(e.errno, e.strerror) from None
        # ENOLCK/EOPNOTSUPP: no locks on this filesystem; go on unprotected, as before locks existed
    try:
        st, now = os.fstat(fd), os.stat(meta_path)
        same = (st.st_ino, st.st_dev) == (now.st_ino, now.st_dev)
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def _hold_for_reading(path: Path) -> int:
    """The shared reader lock of cache ``path`` (a descriptor); refused in one line while an export replaces it."""
    for _ in range(5):
        _check_exists(path)
        try:
            fd = _lock_meta(path, fcntl.LOCK_SH)
        except BlockingIOError:
            raise UserError(
                f"part cache {path} is being replaced (`semmae parts export --overwrite` holds it); wait for the "
                "export to end"
            ) from None
        if fd is not None:
            return fd
    raise UserError(f"part cache {path} keeps being replaced while it is opened; wait for the export to end")


def _hold_for_replacing(path: Path) -> int | None:
    """The exclusive lock of cache ``path`` for ``--overwrite`` (a descriptor, None if it has no meta.json any
    more); refused in one line while a reader holds the cache."""
    try:
        return _lock_meta(path, fcntl.LOCK_EX)
    except BlockingIOError:
        raise UserError(
            f"part cache {path} is being read by a running process (a pretrain, a pack or an evaluation holds "
            "it open); --overwrite would replace it under that reader: wait for it to end, or use another --out"
        ) from None


def _remove_cache_folder(folder: Path, unfinished: bool) -> None:
    """Delete exactly a cache's own files in ``folder`` (each a plain file: a symlink is unlinked, never
    followed), then the emptied folder. The caller has checked it with :func:`not_a_cache`; anything else found
    there now is left alone and refused."""
    # meta.json last: a kill part way leaves a cache (with files missing) that --overwrite deletes again
    for entry in sorted(os.scandir(folder), key=lambda e: e.name == "meta.json"):
        if _is_own(entry.name, unfinished, folder) and not entry.is_dir(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        folder.rmdir()
    except OSError as e:
        raise UserError(
            f"cannot remove {folder}: {e.strerror or e} (something other than a part cache's files is there); "
            "semmae leaves it alone: move those files or use another --out"
        ) from None


#: meta.json fields a reader needs, with the check each value must pass
_META_FIELDS = {
    "format_version": lambda v: v in READABLE_VERSIONS,
    "grid": lambda v: v >= 1,
    "num_parts": lambda v: 1 <= v <= MAX_PARTS,
    "num_images": lambda v: v >= 1,
}


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json, checked: every field a reader needs is there with a sane value (else one UserError)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"part cache {path}: meta.json is corrupt ({e}); {REBUILD_HINT}") from None
    except OSError as e:
        raise UserError(f"part cache {path}: cannot read meta.json: {e.strerror or e}") from None
    if not isinstance(meta, dict):
        raise UserError(f"part cache {path}: meta.json holds no mapping; {REBUILD_HINT}")
    version = meta.get("format_version")
    if isinstance(version, int) and version not in READABLE_VERSIONS:
        raise UserError(
            f"part cache {path} has format version {version}, this semmae reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; {REBUILD_HINT}"
        )
    missing = [k for k in (*_META_FIELDS, "file_list_digest") if k not in meta]
    if missing:
        raise UserError(
            f"part cache {path}: meta.json is incomplete (no {', '.join(repr(k) for k in missing)}); {REBUILD_HINT}"
        )
    for key, ok in _META_FIELDS.items():
        value = meta[key]
        if not isinstance(value, int) or isinstance(value, bool) or not ok(value):
            raise UserError(f"part cache {path}: meta.json has a bad {key!r} ({value!r}); {REBUILD_HINT}")
    if not isinstance(meta["file_list_digest"], str):
        raise UserError(f"part cache {path}: meta.json has a bad 'file_list_digest'; {REBUILD_HINT}")
    return meta


def _check_size(path: Path, name: str, expected: int, what: str) -> None:
    size = (path / name).stat().st_size if (path / name).is_file() else -1
    if size != expected:
        found = "is missing" if size < 0 else f"has {size} bytes"
        raise UserError(
            f"part cache {path}: {name} {found}, expected {expected} ({what}); the cache is corrupt or "
            f"incomplete, {REBUILD_HINT}"
        )


def file_sizes(root: str | Path, relative_paths: list[str]) -> np.ndarray:
    """Each file's size in bytes (uint64 ``[N]``): the cache's cheap content fingerprint (one ``stat`` per file)."""
    root = Path(root)
    try:
        return np.array([os.stat(root / rel).st_size for rel in relative_paths], dtype=np.uint64)
    except OSError as e:
        raise UserError(f"cannot stat {e.filename}: {e.strerror or e}") from None


def _sizes_digest(sizes: np.ndarray) -> str:
    return hashlib.sha256(sizes.astype("<u8").tobytes()).hexdigest()


class PartCacheWriter:
    """Writes a cache chunk by chunk, in index order, resumably and atomically.

    ``write(start, part_ids [n, G, G], fg [n, G, G])`` must continue at ``next_index``; each call is flushed and
    recorded before it returns. Creating a writer again for the same path and settings resumes an unfinished
    cache; different settings are refused. ``finalize()`` checks completeness and publishes the cache.
    """

    def __init__(
        self,
        path: Path,
        relative_paths: list[str],
        grid: int,
        num_parts: int,
        producer: dict[str, Any],
        overwrite: bool,
        root: str | Path | None = None,
    ):
        part_bits, fg_bits = _bits(num_parts)
        if grid < 1:
            raise UserError(f"part cache grid must be >= 1, got {grid}")
        if not relative_paths:
            raise UserError("cannot create a part cache for an empty dataset")
        self.path, self.partial = path, _partial_path(path)
        self.num_parts, self.grid = num_parts, grid
        self.meta = {
            "format_version": FORMAT_VERSION,
            "grid": grid,
            "num_parts": num_parts,
            "no_part_id": num_parts,
            "part_bits": part_bits,
            "fg_bits": fg_bits,
            "num_images": len(relative_paths),
            "file_list_digest": file_list_digest(relative_paths),
            "checksum": "crc32 of each image's codes, crc32.u32",
            "producer": producer,
        }
        sizes = file_sizes(root, relative_paths) if root is not None else None
        if sizes is not None:
            self.meta["content_fingerprint"] = {"kind": FINGERPRINT_KIND, "digest": _sizes_digest(sizes)}
        for folder, unfinished in ((path, False), (self.partial, True)):
            why = not_a_cache(folder, unfinished) if folder.exists() else None
            if why:
                raise UserError(
                    f"{folder} {why}, so it is not a part cache and an export leaves it alone; choose another --out"
                )
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise UserError(
                f"part cache {path} already exists; pass --overwrite to replace it, or use another --out"
            )
        live = live_lock_above(path.parent)
        if live is not None:
            raise UserError(
                f"part cache {path} lies inside {live}, the folder of a run that is still going; wait for it "
                "to end or use another --out"
            )
        try:
            self._start(path, relative_paths, sizes, overwrite)
        except OSError as e:
            raise UserError(
                f"cannot write part cache {e.filename or self.partial}: {e.strerror or e}"
            ) from None

    def _start(
        self, path: Path, relative_paths: list[str], sizes: np.ndarray | None, overwrite: bool
    ) -> None:
        grid = self.grid
        if path.exists() and overwrite:
            fd = _hold_for_replacing(path)  # no reader may hold it while it is deleted
            try:
                _remove_cache_folder(path, unfinished=False)
            finally:
                if fd is not None:
                    os.close(fd)
            print(f"part cache {path}: --overwrite: deleted the old cache", file=sys.stderr, flush=True)
        progress_path = self.partial / "progress.json"
        if self.partial.exists() and progress_path.exists():
            try:
                old = json.loads((self.partial / "meta.json").read_text())
                self.next_index = int(json.loads(progress_path.read_text())["next_index"])
            except (ValueError, KeyError, TypeError, OSError):
                old = None  # a record damaged by a crash: start this unfinished cache again
            if old is None:
                _remove_cache_folder(self.partial, unfinished=True)
                return self._start(path, relative_paths, sizes, overwrite)
            if old != sealed_json(self.meta):
                changed = sorted(k for k in self.meta if old.get(k) != self.meta[k])
                raise UserError(
                    f"an unfinished part cache at {self.partial} was started with other settings "
                    f"({', '.join(changed)} differ); delete it or rerun with the same settings"
                )
        else:
            if self.partial.exists():
                _remove_cache_folder(self.partial, unfinished=True)
            self.partial.mkdir(parents=True)
            # written file by file, then renamed: a run folder holding the cache (the demo's) records each file
            note_written(*(self.partial / name for name in (*CACHE_FILES, "progress.json")))
            # meta.json first: an unfinished folder holding anything else is recognisably an export's
            atomic_write_json(self.partial / "meta.json", sealed_json(self.meta))  # utils/content_seal.py
            atomic_write_text(self.partial / "files.txt", "\n".join(relative_paths) + "\n")
            n = len(relative_paths)
            for name, nbytes in (("codes.u8", n * grid * grid), ("crc32.u32", n * 4)):
                with open(self.partial / name, "wb") as fh:
                    # reserve the blocks now: a full disk is an error here, not a SIGBUS in a memmap write later
                    os.posix_fallocate(fh.fileno(), 0, nbytes)
            if sizes is not None:
                sizes.astype("<u8").tofile(self.partial / "sizes.u64")
            note_identity(*(self.partial / name for name in ("codes.u8", "crc32.u32", "sizes.u64")))
            self.next_index = 0
            self._record_progress()
        n = len(relative_paths)
        self._codes = np.memmap(self.partial / "codes.u8", dtype=np.uint8, mode="r+", shape=(n, grid * grid))
        self._crc = np.memmap(self.partial / "crc32.u32", dtype="<u4", mode="r+", shape=(n,))

    @property
    def num_images(self) -> int:
        return int(self.meta["num_images"])

    @property
    def done(self) -> bool:
        return self.next_index >= self.num_images

    def _record_progress(self) -> None:
        atomic_write_json(self.partial / "progress.json", {"next_index": self.next_index})

    def write(self, start: int, part_ids: np.ndarray | torch.Tensor, fg: np.ndarray | torch.Tensor) -> None:
        """Store images ``start .. start + n - 1`` (``part_ids``/``fg``: ``[n, G, G]``)."""
        if start != self.next_index:
            raise ValueError(f"part cache writes must continue at index {self.next_index}, got {start}")
        part_ids = np.asarray(part_ids.cpu() if isinstance(part_ids, torch.Tensor) else part_ids)
        fg = np.asarray(fg.detach().float().cpu() if isinstance(fg, torch.Tensor) else fg)
        n = part_ids.shape[0]
        if part_ids.shape[1:] != (self.grid, self.grid) or fg.shape != part_ids.shape:
            raise ValueError(
                f"expected part ids and fg of shape [n, {self.grid}, {self.grid}], got "
                f"{tuple(part_ids.shape)} and {tuple(fg.shape)}"
            )
        if start + n > self.num_images:
            raise ValueError(f"writing {n} images at {start} overruns the cache's {self.num_images} images")
        codes = encode_cells(part_ids, fg, self.num_parts).reshape(n, -1)
        try:
            self._codes[start : start + n] = codes
            self._crc[start : start + n] = [zlib.crc32(row.tobytes()) for row in codes]
            self._codes.flush()
            self._crc.flush()
            note_identity(self.partial / "codes.u8", self.partial / "crc32.u32", appended=True)
            self.next_index = start + n
            self._record_progress()
        except OSError as e:
            raise UserError(f"cannot write part cache {self.partial}: {e.strerror or e}") from None

    def finalize(self) -> PartCache:
        """Publish the finished cache at its path (atomic rename) and return it opened."""
        if not self.done:
            raise UserError(
                f"part cache {self.partial} is incomplete: {self.next_index}/{self.num_images} images"
            )
        del self._codes, self._crc
        try:
            for name in ("codes.u8", "crc32.u32"):
                with open(self.partial / name, "rb+") as fh:
                    os.fsync(fh.fileno())
            # what each file holds, sealed with the rest: a cache whose codes you corrected by hand is yours
            digests = {
                n: sha256_file(self.partial / n) for n in CACHE_FILES[1:] if (self.partial / n).is_file()
            }
            self.meta = {**self.meta, "files_sha256": digests}
            atomic_write_json(self.partial / "meta.json", sealed_json(self.meta))
            (self.partial / "progress.json").unlink()
            note_written(*(self.path / name for name in CACHE_FILES))  # recorded before the rename
            # a rename keeps what identifies each file
            note_identity_as(
                [(self.path / n, self.partial / n) for n in CACHE_FILES if (self.partial / n).exists()]
            )
            os.replace(self.partial, self.path)
            forget_written(*(self.partial / name for name in (*CACHE_FILES, "progress.json")))
        except OSError as e:
            raise UserError(f"cannot finish part cache {self.path}: {e.strerror or e}") from None
        return PartCache.open(self.path, lock=False)
