"""Packed datasets (``semmae data pack``): every image decoded once, at a fixed side, with its label and part cells.

A pack is a folder of WebDataset shards - plain POSIX tar files, written as ``webdataset.TarWriter`` writes them
(:class:`ShardWriter`: packing and reading a pack need no webdataset; only streaming from URLs does) - plus a
manifest. Each image is one tar sample::

    <index>.pixels.npy   uint8 [side, side, 3]: the whole image resized (bicubic, antialiased) to side x side
    <index>.parts.npy    uint8 [G, G]: its part-cache cells (the codes of :mod:`semmae.data.part_cache`), if any
    <index>.cls          the class index
    <index>.json         {"path": relative path, "height", "width"}: the image as it was on disk

so any WebDataset reader streams a pack from a filesystem, HTTP or object storage (:func:`stream_pack`), while on
one box :class:`PackedImages` memory-maps the shards and copies a batch's pixels straight out of them (the byte
offsets of every array are recorded per shard in ``index/``). Layout of a pack folder::

    pack.json          format version, side, classes, image count, file-list digest, part-cache settings, the
                       SHA-256 of each field a reader trusts (``digests``), and one row per finished shard:
                       name, first image, count, bytes, sha256 (tar and index)
    files.txt          the dataset's relative file list (pack index = ImageFolder index)
    shard-000000.tar   ...
    index/shard-000000.npy   int64 [count, 5]: pixels offset, parts offset, label, height, width

Packing decodes with the same rules as ``semmae data check`` (:func:`semmae.data.images.load_rgb`); an unreadable
file stops it with its path. Shards are written as ``*.partial`` and renamed once hashed and recorded, so an
interrupted pack resumes at the first unfinished shard. Opening a pack checks every shard's size, the manifest's
fields against their digests, ``files.txt`` against the manifest, and the classes against the file list and the
labels; ``semmae data check --data PACK`` (:func:`open_pack_checked`) also re-hashes every shard, naming a bad one,
and reads every sample back (:meth:`PackedImages.check_contents`): its key, path, label, size and part ids must be
what the manifest, ``files.txt`` and the index say. Packs made before ``digests`` existed are checked as far as
their shards allow, and ``data check`` says what it could not verify.

``--overwrite`` and resume act only on a folder holding nothing but a pack's files (:func:`not_a_pack`; no symlinks)
and delete exactly those files (:func:`_clear_pack`).

The whole image is resized to a square (its size on disk is kept), so the part cache's G x G grid over the image
stays aligned with the pixels; :class:`~semmae.data.batch_augment.BatchPartAugment` draws RandomResizedCrop boxes in
the original frame and moves them to the square, so the crops' aspect ratios are the ones a JPEG run would draw.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semmae.data.folder import file_list_digest, scan_image_folder
from semmae.errors import BadImageError, UserError
from semmae.utils.content_seal import SEAL, json_file_sealed, sealed_json
from semmae.utils.io import atomic_write_json, atomic_write_text, naming_os_errors
from semmae.utils.run_housekeeping import is_temporary
from semmae.utils.run_lock import LOCK_NAME, exclusive
from semmae.utils.rundir import check_out_outside, live_lock_above

FORMAT = "semmae-pack"
FORMAT_VERSION = 1
MANIFEST = "pack.json"
_PACK_FILE = re.compile(r"^shard-\d{6}\.tar(\.partial)?$")
_INDEX_FILE = re.compile(r"^shard-\d{6}\.npy(\.partial)?$")
#: the atomic-write temporaries (:mod:`semmae.utils.io`) of a pack's own manifest and file list
_OWN_TEMPORARY = re.compile(r"^\.(pack\.json|files\.txt)\.[A-Za-z0-9_]+\.tmp$")
#: manifest fields that are not settings: the digests (derived from them) and the progress
_NOT_SETTINGS = ("shards", "complete", "digests", SEAL)


def is_pack(path: str | Path) -> bool:
    """True if ``path`` is a pack folder (has a ``pack.json``), finished or not."""
    return (Path(path) / MANIFEST).is_file()


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _decode(job: tuple[str, int]) -> tuple[np.ndarray, int, int] | tuple[str, str]:
    """Decode one file to ``(uint8 [side, side, 3], height, width)``, or ``(path, reason)`` when unreadable."""
    from PIL import Image

    from semmae.data.images import load_rgb

    path, side = job
    try:
        img = load_rgb(path)
    except BadImageError as e:
        return (str(path), e.reason)
    w, h = img.size
    if (w, h) != (side, side):
        img = img.resize((side, side), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8), h, w


@dataclass
class PackReport:
    path: str
    num_images: int
    shards_written: int
    shards_total: int
    seconds: float
    bytes_total: int

    @property
    def bytes_per_image(self) -> float:
        return self.bytes_total / max(self.num_images, 1)

    def format(self) -> str:
        rate = (
            f"{self.shards_written} shard(s) written in {self.seconds:.1f} s"
            if self.shards_written
            else "nothing to write"
        )
        return (
            f"packed {self.num_images} images into {self.path} ({self.shards_total} shards, "
            f"{self.bytes_total / 2**20:.1f} MiB, {self.bytes_per_image:.0f} bytes/image); {rate}"
        )


def pack_dataset(
    data: str | Path,
    out: str | Path,
    side: int,
    parts: str | Path | None = None,
    shard_size: int = 2048,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    max_shards: int | None = None,
) -> PackReport:
    """Pack an ImageFolder (and optionally its part cache) into ``out``; resumes an unfinished pack.

    Args:
        data: ImageFolder root. out: the pack folder. side: the stored square side (the training ``--img-size``
            for ``--augment flip``; a bit more, e.g. 8/7 of it, for crops). parts: a part cache made for ``data``.
        shard_size: images per shard. workers: decoding processes (0: this process).
        overwrite: replace a finished pack. max_shards: stop after writing this many shards (tests, staging).
    """
    from semmae.data.part_cache import PartCache

    if side < 8:
        raise UserError(f"--side must be >= 8, got {side}")
    if shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {shard_size}")
    root, out = Path(data), Path(out)
    if is_pack(root):
        raise UserError(f"{root} is already a pack; pass the ImageFolder it was made from")
    classes, samples = scan_image_folder(root)
    rel = [Path(p).relative_to(root).as_posix() for p, _ in samples]
    cache = PartCache.open(parts, rel) if parts is not None else None
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "side": side,
        "num_images": len(samples),
        "shard_size": shard_size,
        "classes": classes,
        "file_list_digest": file_list_digest(rel),
        "parts": None
        if cache is None
        else {
            "grid": cache.grid,
            "num_parts": cache.num_parts,
            "cache": str(cache.path),
            "producer": cache.meta.get("producer", {}),
        },
    }
    meta["digests"] = field_digests(meta)
    check_out_outside(out, {"--data": root})
    live = live_lock_above(out)
    if live is not None and live != out.resolve():
        raise UserError(
            f"pack {out} lies inside {live}, the folder of a run that is still going; wait for it to end or use "
            "another --out"
        )
    if live is None:  # a live --out is refused by its lock below, naming the holder
        _check_pack_folder(out)
    # one writer per pack: a second `data pack` on the same --out is refused (and sees its lock as a live run)
    with exclusive(out / LOCK_NAME, f"pack {out}", "data pack"):
        _check_pack_folder(out)
        return _pack(
            root, out, side, samples, rel, cache, meta, shard_size, workers, overwrite, progress, max_shards
        )


def _check_pack_folder(out: Path) -> None:
    """Refuse an ``--out`` that exists and is neither empty nor a pack (nothing there is written or deleted)."""
    if not out.exists() or (out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_NAME}):
        return
    why = not_a_pack(out)
    if why:
        raise UserError(
            f"{out} {why}, so it is not a pack and `data pack` leaves it alone; choose another --out"
        )


def _is_pack_file(name: str) -> bool:
    return bool(_PACK_FILE.match(name)) or name in (MANIFEST, "files.txt") or bool(_OWN_TEMPORARY.match(name))


def not_a_pack(out: Path) -> str | None:
    """Why folder ``out`` is not a pack, or None when it is one: a ``pack.json`` of this format and only a pack's
    files, each a plain file (an ``index`` folder of index files; no symlinks: nothing there leads out of the
    folder). The marker `data pack` checks before it replaces or writes anything there."""
    if not out.is_dir():
        return "is not a folder"
    try:
        recorded = json.loads((out / MANIFEST).read_text())
        n_shards = -(-int(recorded["num_images"]) // int(recorded["shard_size"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        n_shards = None

    def beyond(name: str) -> bool:  # a shard number the pack never writes (a shard of yours added beside it)
        m = re.match(r"^shard-(\d{6})\.", name)
        return n_shards is not None and m is not None and int(m.group(1)) >= n_shards

    foreign = []
    for p in out.iterdir():
        if p.name == LOCK_NAME or (is_temporary(p.name) and not _OWN_TEMPORARY.match(p.name)):
            continue  # the writer's lock; another process's temporary, which no clear touches
        if p.name == "index":
            plain = p.is_dir() and not p.is_symlink()
        else:
            plain = _is_pack_file(p.name) and p.is_file() and not p.is_symlink() and not beyond(p.name)
        if not plain:
            foreign.append(p.name)
    index = out / "index"
    if index.is_dir() and not index.is_symlink():
        foreign += [
            f"index/{p.name}"
            for p in index.iterdir()
            if not (_INDEX_FILE.match(p.name) and p.is_file() and not p.is_symlink() and not beyond(p.name))
            and not is_temporary(p.name)
        ]
    if foreign:
        more = f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        return f"holds {', '.join(sorted(foreign)[:4])}{more}"
    try:
        fmt = json.loads((out / MANIFEST).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        return f"has no readable {MANIFEST}"
    if json_file_sealed(out / MANIFEST) is None:
        return (
            f"has a {MANIFEST} that is not as a pack wrote it (changed since, or written by a semmae before seals: "
            "delete that pack yourself)"
        )
    return None


def _pack(root, out, side, samples, rel, cache, meta, shard_size, workers, overwrite, progress, max_shards):
    manifest = out / MANIFEST
    shards: list[dict[str, Any]] = []
    if manifest.is_file():
        old = _read_manifest(out)
        # settings only: a pack made before manifests had digests resumes too (and gets them)
        settings = {k: v for k, v in old.items() if k not in _NOT_SETTINGS}
        wanted = {k: v for k, v in meta.items() if k not in _NOT_SETTINGS}
        if old.get("complete") and not overwrite:
            # a finished pack is rewritten only where a shard went missing (deleted on `data check`'s advice)
            shards = (
                _intact_shards(out, old["shards"], checksums=False) if settings == wanted else old["shards"]
            )
            if len(shards) == len(old["shards"]):
                raise UserError(f"pack {out} already exists; pass --overwrite to replace it")
        elif old.get("complete") or settings != wanted:
            if not overwrite:
                changed = sorted(k for k in wanted if settings.get(k) != wanted[k])
                raise UserError(
                    f"an unfinished pack at {out} was started with other settings ({', '.join(changed)} "
                    "differ); rerun with the same settings to resume it, or pass --overwrite"
                )
        else:
            shards = _intact_shards(out, old["shards"], checksums=True)
    if overwrite and not shards:
        if manifest.is_file():  # every shard read once: an edit that keeps a tar's size is found too
            _refuse_changed(out, _read_manifest(out).get("shards", []), checksums=True)
        _clear_pack(out)
    out.mkdir(parents=True, exist_ok=True)
    # the manifest first: a kill from here on leaves a pack that a rerun continues, never a folder of leftovers
    _write_manifest(out, meta, shards, complete=False)
    (out / "index").mkdir(exist_ok=True)
    atomic_write_text(out / "files.txt", "\n".join(rel) + "\n")

    n_shards = -(-len(samples) // shard_size)
    done = {s["name"] for s in shards}
    todo = [k for k in range(n_shards) if shard_name(k) not in done]
    if max_shards is not None:
        todo = todo[:max_shards]
    t0 = time.perf_counter()
    pool = None
    if workers > 0 and todo:
        import multiprocessing as mp

        pool = mp.get_context("spawn" if torch.cuda.is_initialized() else "fork").Pool(workers)
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(todo) * shard_size, desc="pack", unit="img", disable=not progress)
        for k in todo:
            first = k * shard_size
            chunk = samples[first : first + shard_size]
            row = _write_shard(out, k, first, chunk, rel, side, cache, pool)
            shards.append(row)
            shards.sort(key=lambda s: s["first"])
            _write_manifest(out, meta, shards, complete=False)
            bar.update(len(chunk))
        bar.close()
    finally:
        if pool is not None:
            pool.terminate()
    seconds = time.perf_counter() - t0
    complete = len(shards) == n_shards
    _write_manifest(out, meta, shards, complete=complete)
    total = sum(s["bytes"] + s["index_bytes"] for s in shards)
    return PackReport(str(out), len(samples), len(todo), n_shards, seconds, total)


def _intact_shards(out: Path, rows: list[dict[str, Any]], checksums: bool) -> list[dict[str, Any]]:
    """The manifest rows whose shard and index are as recorded (size, and with ``checksums`` the SHA-256); a shard
    whose files are missing is named and written again. One that is there but not as the pack wrote it (a sample
    you added, or damage) is never replaced: refused, naming it (:func:`_refuse_changed`)."""
    _refuse_changed(out, rows, checksums)
    kept = []
    for s in rows:
        missing = [p.name for p, _, _ in _shard_files(out, s) if not os.path.lexists(p)]
        if missing:
            print(f"pack {out}: {', '.join(missing)} missing; writing shard {s['name']} again", flush=True)
        else:
            kept.append(s)
    return kept


def _shard_files(out: Path, row: dict[str, Any]) -> tuple[tuple[Path, str, str], ...]:
    """A manifest row's shard and index file, each with the row's keys for its size and SHA-256."""
    return (
        (out / row["name"], "bytes", "sha256"),
        (out / "index" / _index_name(row["name"]), "index_bytes", "index_sha256"),
    )


def _refuse_changed(out: Path, rows: list[dict[str, Any]], checksums: bool) -> None:
    """Refuse (one line) when a shard or index file the manifest lists is there but not as the pack wrote it: not
    a plain file, another size, or (``checksums``) another SHA-256. Nothing is written or deleted."""
    changed = [
        p.name
        for s in rows
        for p, size, digest in _shard_files(out, s)
        if os.path.lexists(p)
        and (
            p.is_symlink()
            or not p.is_file()
            or p.stat().st_size != s.get(size)
            or (checksums and s.get(digest) and _sha256(p) != s[digest])
        )
    ]
    if changed:
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise UserError(
            f"pack {out}: {', '.join(changed[:4])}{more} is not as the pack wrote it (changed since, or damaged), "
            "so semmae leaves it alone: move it out (or delete it, if it is only damaged) and rerun"
        )


def _index_name(shard: str) -> str:
    return shard.replace(".tar", ".npy")


def _clear_pack(out: Path) -> None:
    """Delete exactly a pack's own files (shards, index files, manifest, file list, their temporaries) from
    ``out``, which :func:`not_a_pack` accepted; a symlink is never followed (``index`` is entered only when it
    is a real folder)."""
    if not out.is_dir():
        return
    folders = [(out, _is_pack_file)]
    index = out / "index"
    if index.is_dir() and not index.is_symlink():
        folders.insert(0, (index, lambda name: bool(_INDEX_FILE.match(name))))
    for folder, own in folders:
        # the index files first and the manifest last: a kill part way leaves a pack (with shards missing) that --overwrite clears again
        for entry in sorted(os.scandir(folder), key=lambda e: e.name == MANIFEST):
            if own(entry.name) and not entry.is_dir(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass


def _write_manifest(out: Path, meta: dict[str, Any], shards: list[dict[str, Any]], complete: bool) -> None:
    atomic_write_json(out / MANIFEST, sealed_json({**meta, "complete": complete, "shards": shards}))


def _write_shard(
    out: Path,
    k: int,
    first: int,
    chunk: list[tuple[str, int]],
    rel: list[str],
    side: int,
    cache,
    pool,
) -> dict[str, Any]:
    """Decode, write, index and hash one shard; returns its manifest row."""
    jobs = [(p, side) for p, _ in chunk]
    results = pool.imap(_decode, jobs, chunksize=16) if pool is not None else map(_decode, jobs)
    partial = out / (shard_name(k) + ".partial")
    sizes = np.zeros((len(chunk), 2), dtype=np.int64)
    with naming_os_errors(partial), ShardWriter(partial) as sink:  # mtime 0: same bytes
        for j, res in enumerate(results):
            i = first + j
            if len(res) == 2:
                path, reason = res
                raise UserError(
                    f"cannot pack {path}: {reason}; `semmae data check --data DIR` lists every unreadable "
                    "file (replace them and rerun to resume; a changed file list needs --overwrite and a "
                    "matching part cache)"
                )
            pixels, h, w = res
            sizes[j] = (h, w)
            sample = {
                "__key__": f"{i:09d}",
                "pixels.npy": pixels,
                "cls": chunk[j][1],
                "json": {"path": rel[i], "height": int(h), "width": int(w)},
            }
            if cache is not None:
                sample["parts.npy"] = np.asarray(cache._array()[i]).reshape(cache.grid, cache.grid)
            sink.write(sample)
    index = _index_shard(partial, first, len(chunk), [lab for _, lab in chunk], sizes)
    idx_path = out / "index" / shard_name(k).replace(".tar", ".npy")
    buf = io.BytesIO()
    np.save(buf, index)
    tmp = idx_path.with_suffix(".npy.partial")
    tmp.write_bytes(buf.getvalue())
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, idx_path)
    os.replace(partial, out / shard_name(k))
    return {
        "name": shard_name(k),
        "first": first,
        "count": len(chunk),
        "bytes": (out / shard_name(k)).stat().st_size,
        "sha256": _sha256(out / shard_name(k)),
        "index_bytes": idx_path.stat().st_size,
        "index_sha256": _sha256(idx_path),
    }


class ShardWriter:
    """Writes WebDataset samples to a tar file, byte for byte as ``webdataset.TarWriter(path, mtime=0)`` writes
    a pack's samples (tested), without needing webdataset: members ``<key>.<ext>`` in sorted order, USTAR,
    mode 0o444, owner ``bigdata``, mtime 0 (the same pack, byte for byte, on every machine)."""

    def __init__(self, path: str | Path):
        self._file = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.USTAR_FORMAT)

    @staticmethod
    def _encode(ext: str, value: Any) -> bytes:
        if ext.endswith("npy"):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value)
            return buf.getvalue()
        if ext == "json":
            return json.dumps(value).encode("utf-8")
        return str(value).encode("ascii")  # cls

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        for ext in sorted(k for k in sample if k != "__key__"):
            data = self._encode(ext, sample[ext])
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = "bigdata"
            self._tar.addfile(info, io.BytesIO(data))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._tar.close()
        self._file.close()


def _read_tar_samples(path: str) -> Iterator[dict[str, Any]]:
    """A local shard's samples, decoded (``npy`` arrays, ``cls`` int, ``json`` dict): the subset of
    ``webdataset.WebDataset(...).decode()`` a pack needs, for boxes without webdataset."""
    sample: dict[str, Any] = {}
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = m.name.split(".", 1)
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            raw = tar.extractfile(m).read()
            if ext.endswith("npy"):
                sample[ext] = np.lib.format.read_array(io.BytesIO(raw))
            elif ext == "json":
                sample[ext] = json.loads(raw)
            else:
                sample[ext] = int(raw)
    if sample:
        yield sample


def _npy_header(fh, offset: int) -> tuple[tuple[int, ...], int]:
    """(shape, byte offset of the array data) of the ``.npy`` member whose file data starts at ``offset``."""
    fh.seek(offset)
    fmt = np.lib.format
    major, _ = fmt.read_magic(fh)
    shape = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(fh)[0]
    return tuple(shape), fh.tell()


def _npy_data_offset(fh, offset: int) -> int:
    """Byte offset of the array data of the ``.npy`` member whose file data starts at ``offset``."""
    return _npy_header(fh, offset)[1]


def _index_shard(path: Path, first: int, count: int, labels: list[int], sizes: np.ndarray) -> np.ndarray:
    """int64 ``[count, 5]``: (pixels data offset, parts data offset or -1, label, height, width)."""
    index = np.full((count, 5), -1, dtype=np.int64)
    index[:, 2] = labels
    index[:, 3:] = sizes
    with tarfile.open(path, "r:") as tar, open(path, "rb") as fh:
        for m in tar:
            key, _, field = m.name.partition(".")
            j = int(key) - first
            if field == "pixels.npy":
                index[j, 0] = _npy_data_offset(fh, m.offset_data)
            elif field == "parts.npy":
                index[j, 1] = _npy_data_offset(fh, m.offset_data)
    if (index[:, 0] < 0).any():
        raise UserError(f"packed shard {path} is missing images (internal error while writing it)")
    return index


def read_pack_manifest(path: str | Path) -> dict[str, Any]:
    """A pack's ``pack.json`` (format checked), without opening its shards."""
    return _read_manifest(Path(path))


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"pack {path}: {MANIFEST} is unreadable ({e})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"pack {path} has format {meta.get('format')} v{meta.get('format_version')}, this semmae reads "
            f"{FORMAT} v{FORMAT_VERSION}; repack it"
        )
    return meta


REPACK = "the pack was edited or damaged; repack it (`semmae data pack --overwrite`)"


def _check_manifest(path: Path, meta: dict[str, Any]) -> None:
    """The manifest's fields have the types and ranges a reader relies on (a hand-edited pack.json is named)."""

    def count(v: Any, least: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= least

    parts = meta.get("parts")
    problems = [
        f"{key} {meta.get(key)!r}"
        for key, ok in (
            ("side", count(meta.get("side"), 1)),
            ("num_images", count(meta.get("num_images"), 0)),
            (
                "classes",
                isinstance(meta.get("classes"), list)
                and len(meta["classes"]) >= 1
                and all(isinstance(c, str) for c in meta["classes"]),
            ),
            ("file_list_digest", isinstance(meta.get("file_list_digest"), str)),
            ("digests", meta.get("digests") is None or isinstance(meta.get("digests"), dict)),
            ("shards", isinstance(meta.get("shards"), list)),
            (
                "parts",
                parts is None
                or (
                    isinstance(parts, dict)
                    and count(parts.get("grid"), 1)
                    and count(parts.get("num_parts"), 1)
                ),
            ),
        )
        if not ok
    ]
    rows = meta.get("shards") if isinstance(meta.get("shards"), list) else []
    keys = ("first", "count", "bytes", "index_bytes")
    if any(not isinstance(r, dict) or not all(count(r.get(k), 0) for k in keys) for r in rows):
        problems.append("shard row")
    if problems:
        raise UserError(f"pack {path}: {MANIFEST} has a bad {', '.join(problems)}; {REPACK}")


def _check_shard(path: Path, meta: dict[str, Any], row: dict[str, Any], index: np.ndarray) -> None:
    """A shard's index fits the manifest: the array shapes its first sample stores (side x side x 3 pixels,
    G x G part cells), its rows, labels and byte offsets - so an edited side or offset is one line."""
    name, side, parts = row["name"], int(meta["side"]), meta.get("parts")
    where = f"packed shard {path / name}"
    want = {"pixels.npy": (side, side, 3), "parts.npy": (parts["grid"],) * 2 if parts else None}
    with tarfile.open(path / name, "r:") as tar, open(path / name, "rb") as fh:
        first_key = None
        for m in tar:
            key, _, field = m.name.partition(".")
            if first_key not in (None, key):
                break  # the first sample's members are all read
            first_key = key
            if field in want:
                shape = _npy_header(fh, m.offset_data)[0]
                if shape != want[field]:
                    raise UserError(
                        f"{where} holds {field.removesuffix('.npy')} of shape {list(shape)}, {MANIFEST} says "
                        f"{list(want[field] or ())}; {REPACK}"
                    )
    if index.ndim != 2 or index.shape != (row["count"], 5) or index.dtype != np.int64:
        raise UserError(
            f"{where}: its index has shape {index.shape}, the manifest {row['count']} rows; {REPACK}"
        )
    for col, nbytes in [(0, side * side * 3)] + ([(1, parts["grid"] ** 2)] if parts else []):
        if ((index[:, col] < 0) | (index[:, col] + nbytes > row["bytes"])).any():
            raise UserError(f"{where}: its index has offsets outside the shard; {REPACK}")
    if ((index[:, 2] < 0) | (index[:, 2] >= len(meta["classes"]))).any():
        raise UserError(f"{where}: its index has labels outside the {len(meta['classes'])} classes; {REPACK}")


#: the manifest fields a reader trusts beyond what the shards' shapes and sizes show; ``pack`` records the SHA-256
#: of each (``digests``), so a hand edit of one is refused when the pack is opened
TRUSTED_FIELDS = ("side", "num_images", "classes", "file_list_digest", "parts")


def _trusted_value(meta: dict[str, Any], key: str) -> Any:
    if key == "parts" and isinstance(meta.get("parts"), dict):
        return {"grid": meta["parts"].get("grid"), "num_parts": meta["parts"].get("num_parts")}
    return meta.get(key)


def field_digests(meta: dict[str, Any]) -> dict[str, str]:
    """The SHA-256 of each of :data:`TRUSTED_FIELDS` (canonical JSON; of ``parts`` its grid and part count)."""
    return {
        key: hashlib.sha256(json.dumps(_trusted_value(meta, key), sort_keys=True).encode()).hexdigest()
        for key in TRUSTED_FIELDS
    }


def read_file_list(path: str | Path) -> list[str]:
    """A pack's ``files.txt``: one relative path a line (only ``\\n`` ends a line)."""
    lines = (Path(path) / "files.txt").read_text(encoding="utf-8", errors="surrogateescape").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _check_consistency(path: Path, meta: dict[str, Any], labels: np.ndarray) -> None:
    """What a reader checks before trusting a manifest whose shards fit it (cheap: no shard is read): its fields
    against the digests written at pack time (packs that have them), ``files.txt`` against its image count and
    file-list digest, and its classes against the file list and the labels (an ImageFolder's class is the first
    folder of a path, and every class has images)."""
    digests = meta.get("digests")
    if digests is not None:
        edited = [k for k, v in field_digests(meta).items() if digests.get(k) != v]
        if edited:
            names = ", ".join("parts (grid, num_parts)" if k == "parts" else k for k in edited)
            raise UserError(
                f"pack {path}: {MANIFEST}'s {names} differ from what was packed (the digests written at pack time "
                f"do not match); {REPACK}"
            )
    try:
        files = read_file_list(path)
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        raise UserError(f"pack {path}: files.txt is missing or unreadable ({why}); {REPACK}") from None
    n = int(meta["num_images"])
    if len(files) != n:
        raise UserError(f"pack {path}: files.txt lists {len(files)} files, {MANIFEST} {n} images; {REPACK}")
    if file_list_digest(files) != meta["file_list_digest"]:
        raise UserError(
            f"pack {path}: files.txt is not the file list that was packed (its digest is not {MANIFEST}'s "
            f"file_list_digest); {REPACK}"
        )
    classes = meta["classes"]
    ids = {c: i for i, c in enumerate(classes)}
    folder = np.fromiter((ids.get(f.split("/", 1)[0], -1) for f in files), dtype=np.int64, count=n)
    bad = np.flatnonzero(folder != labels)
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"pack {path}: image {i} ({files[i]}) has label {int(labels[i])}, which {MANIFEST}'s classes name "
            f"{classes[int(labels[i])]!r}, not its class folder {files[i].split('/', 1)[0]!r}; {REPACK}"
        )
    used = np.unique(labels).size
    if used != len(classes):
        raise UserError(
            f"pack {path}: {MANIFEST} lists {len(classes)} classes, its images have {used}; {REPACK}"
        )


def _shard_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, members)`` of every sample of a local shard, pixels unread: ``pixels.npy`` -> (data offset,
    shape), ``parts.npy`` -> (data offset, array), ``cls`` and ``json`` -> their bytes."""
    key: str | None = None
    members: dict[str, Any] = {}
    with tarfile.open(path, "r:") as tar, open(path, "rb") as fh:
        for m in tar:
            k, _, field = m.name.partition(".")
            if key is not None and k != key:
                yield key, members
                members = {}
            key = k
            if not m.isfile():
                members[field] = None
            elif field == "pixels.npy":
                shape, offset = _npy_header(fh, m.offset_data)
                members[field] = (offset, shape)
            elif field == "parts.npy":
                raw = tar.extractfile(m).read()
                members[field] = (
                    _npy_data_offset(fh, m.offset_data),
                    np.lib.format.read_array(io.BytesIO(raw)),
                )
            else:
                members[field] = tar.extractfile(m).read()
    if key is not None:
        yield key, members


class PackedImages:
    """Read side of a pack: memory-maps the shards; ``get_batch(indices)`` copies a batch out of them.

    Attributes: ``side``, ``classes``, ``relative_paths``, ``labels`` (long numpy ``[N]``), and when the pack
    carries part cells ``grid``, ``num_parts``, ``no_part_id`` (else None).
    """

    def __init__(self, path: Path, meta: dict[str, Any], index: np.ndarray, shard_of: np.ndarray):
        self.path, self.meta = path, meta
        self.side = int(meta["side"])
        self.classes: list[str] = list(meta["classes"])
        parts = meta.get("parts")
        self.grid = int(parts["grid"]) if parts else None
        self.num_parts = int(parts["num_parts"]) if parts else None
        self.no_part_id = self.num_parts
        self._index, self._shard_of = index, shard_of
        self.labels = index[:, 2].copy()
        self._maps: list[np.memmap] | None = None  # opened lazily, once per process (DataLoader workers)

    @staticmethod
    def open(path: str | Path) -> PackedImages:
        """Open a finished pack, checking its manifest and every shard's size (a bad shard is named)."""
        path = Path(path)
        if not is_pack(path):
            raise UserError(f"{path} is not a pack (no {MANIFEST}); make one with `semmae data pack`")
        meta = _read_manifest(path)
        if not meta.get("complete"):
            raise UserError(
                f"pack {path} is unfinished ({len(meta['shards'])} shards written); rerun `semmae data pack` "
                "with the same arguments to resume it"
            )
        _check_manifest(path, meta)
        rows, shard_of = [], []
        for k, s in enumerate(meta["shards"]):
            for name, key in (
                (s["name"], "bytes"),
                ("index/" + s["name"].replace(".tar", ".npy"), "index_bytes"),
            ):
                p = path / name
                size = p.stat().st_size if p.is_file() else -1
                if size != s[key]:
                    what = "missing" if size < 0 else f"{size} bytes, the manifest records {s[key]}"
                    raise UserError(
                        f"packed shard {p} is {what}: it is damaged; delete it and rerun `semmae data pack` "
                        "with the same arguments to rewrite it"
                    )
            try:
                idx = np.load(path / "index" / s["name"].replace(".tar", ".npy"))
            except ValueError as e:
                raise UserError(f"packed shard index {s['name']}: {e}; rerun `semmae data check`") from None
            _check_shard(path, meta, s, idx)
            rows.append(idx)
            shard_of.append(np.full(len(idx), k, dtype=np.int64))
        index = np.concatenate(rows)
        if len(index) != meta["num_images"]:
            raise UserError(
                f"pack {path} indexes {len(index)} images, its manifest says {meta['num_images']}"
            )
        _check_consistency(path, meta, index[:, 2])
        return PackedImages(path, meta, index, np.concatenate(shard_of))

    def __len__(self) -> int:
        return int(self.meta["num_images"])

    @property
    def relative_paths(self) -> list[str]:
        return read_file_list(self.path)

    @property
    def bytes_per_image(self) -> float:
        total = sum(s["bytes"] + s["index_bytes"] for s in self.meta["shards"])
        return total / max(len(self), 1)

    def _shards(self) -> list[np.memmap]:
        if self._maps is None:
            self._maps = [
                np.memmap(self.path / s["name"], dtype=np.uint8, mode="r") for s in self.meta["shards"]
            ]
        return self._maps

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open the memory maps themselves
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def get_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """``{"pixels" uint8 [B, side, side, 3], "codes" uint8 [B, G, G] (with parts), "label" long [B],
        "index" long [B], "size" long [B, 2] (height, width on disk)}``."""
        idx = np.asarray(indices, dtype=np.int64)
        maps, rows, shard = self._shards(), self._index[idx], self._shard_of[idx]
        s, n = self.side, len(idx)
        pixels = np.empty((n, s, s, 3), dtype=np.uint8)
        nbytes = s * s * 3
        for j in range(n):
            o = rows[j, 0]
            pixels[j] = maps[shard[j]][o : o + nbytes].reshape(s, s, 3)
        out = {
            "pixels": torch.from_numpy(pixels),
            "label": torch.from_numpy(rows[:, 2].copy()),
            "index": torch.from_numpy(idx.copy()),
            "size": torch.from_numpy(rows[:, 3:5].copy()),
        }
        if self.grid is not None:
            g = self.grid
            codes = np.empty((n, g, g), dtype=np.uint8)
            for j in range(n):
                o = rows[j, 1]
                codes[j] = maps[shard[j]][o : o + g * g].reshape(g, g)
            out["codes"] = torch.from_numpy(codes)
        return out

    def verify(self, progress: bool = False) -> list[str]:
        """Re-hash every shard and index against the manifest; returns the names of bad ones (empty: all good)."""
        from tqdm import tqdm

        bad = []
        for s in tqdm(self.meta["shards"], desc="verify", unit="shard", disable=not progress):
            idx_name = "index/" + s["name"].replace(".tar", ".npy")
            if (
                _sha256(self.path / s["name"]) != s["sha256"]
                or _sha256(self.path / idx_name) != s["index_sha256"]
            ):
                bad.append(s["name"])
        return bad

    def check_contents(self, progress: bool = False) -> list[str]:
        """Read every sample of every shard back and check it against the manifest, ``files.txt`` and the index:
        its key (its image index), members, label, path, size on disk, array shapes and byte offsets, and that its
        part ids lie in ``0..num_parts``. The first disagreement is one UserError; returns notes on what could not
        be verified (a pack made before manifests recorded digests)."""
        from tqdm import tqdm

        from semmae.data.part_cache import _bits

        files = read_file_list(self.path)
        parts = self.meta.get("parts")
        fields = {"pixels.npy", "cls", "json"} | ({"parts.npy"} if parts else set())
        fg_bits = _bits(self.num_parts)[1] if parts else 0
        side, grid, top = self.side, self.grid, 0
        for s in tqdm(self.meta["shards"], desc="check", unit="shard", disable=not progress):
            where = f"packed shard {self.path / s['name']}"
            i = s["first"]
            for key, members in _shard_records(self.path / s["name"]):
                if i >= s["first"] + s["count"] or key != f"{i:09d}":
                    raise UserError(f"{where} holds sample {key!r} where image {i} belongs; {REPACK}")
                if set(members) != fields or None in members.values():
                    raise UserError(
                        f"{where}: sample {key} holds {', '.join(sorted(members))}, a pack's samples "
                        f"{', '.join(sorted(fields))}; {REPACK}"
                    )
                row = self._index[i]
                try:
                    label, info = int(members["cls"]), json.loads(members["json"])
                    seen = {
                        "label": label,
                        "path": info["path"],
                        "size": [int(info["height"]), int(info["width"])],
                        "pixels": members["pixels.npy"],
                    }
                except (ValueError, KeyError, TypeError):
                    raise UserError(
                        f"{where}: sample {key} has an unreadable cls or json; {REPACK}"
                    ) from None
                want = {
                    "label": int(row[2]),
                    "path": files[i],
                    "size": row[3:5].tolist(),
                    "pixels": (int(row[0]), (side, side, 3)),
                }
                if parts:
                    offset, codes = members["parts.npy"]
                    seen["parts"] = (offset, codes.shape, codes.dtype)
                    want["parts"] = (int(row[1]), (grid, grid), np.dtype(np.uint8))
                for what, value in seen.items():
                    if value != want[what]:
                        source = "files.txt" if what == "path" else "its index"
                        raise UserError(
                            f"{where}: image {i} has {what} {value!r} in the shard, {source} says "
                            f"{want[what]!r}; {REPACK}"
                        )
                if parts:
                    top = max(top, int(codes.max(initial=0)) >> fg_bits)
                    if top > self.num_parts:
                        raise UserError(
                            f"{where}: image {i} holds part id {top}, {MANIFEST} says {self.num_parts} parts (ids "
                            f"0..{self.num_parts}, {self.num_parts} = no part); {REPACK}"
                        )
                i += 1
            if i != s["first"] + s["count"]:
                raise UserError(
                    f"{where} holds {i - s['first']} images, {MANIFEST} says {s['count']}; {REPACK}"
                )
        notes = []
        if "digests" not in self.meta and parts:
            notes.append(
                f"pack {self.path} was made before {MANIFEST} recorded digests of its fields: its parts.num_parts "
                f"({self.num_parts}) could be checked only as an upper bound of the part ids its shards hold (at "
                f"most {top}); repack it (`semmae data pack --overwrite`) to have it verified"
            )
        return notes


def open_pack_checked(path: str | Path) -> PackedImages:
    """:meth:`PackedImages.open` plus a full checksum pass and :meth:`PackedImages.check_contents`; the first bad
    shard or disagreement is named in one line, and what could not be verified is noted on stderr."""
    import sys

    pack = PackedImages.open(path)
    bad = pack.verify()
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(
            f"packed shard {Path(path) / bad[0]} has a bad checksum{more}: it is corrupt; delete it and rerun "
            "`semmae data pack` with the same arguments to rewrite it"
        )
    for note in pack.check_contents():
        print(f"note: {note}", file=sys.stderr, flush=True)
    return pack


def stream_pack(urls: str | list[str]) -> Iterator[dict[str, Any]]:
    """Stream a pack's shards with WebDataset (local paths, ``https://...`` or ``pipe:aws s3 cp s3://... -``):
    yields ``{"pixels" uint8 [side, side, 3], "codes" uint8 [G, G] (with parts), "label", "index", "size"}``
    in shard order - the record :meth:`PackedImages.get_batch` returns for one image. Without webdataset
    installed, local shard paths are still read (a plain tar reader)."""
    try:
        import webdataset as wds
    except ImportError:
        paths = [urls] if isinstance(urls, str) else list(urls)
        if any("://" in u or u.startswith("pipe:") or "{" in u for u in paths):
            raise UserError("streaming a pack from a URL needs webdataset: pip install webdataset") from None
        samples = (s for p in paths for s in _read_tar_samples(p))
    else:
        samples = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    for sample in samples:
        info = sample["json"]
        item = {
            "pixels": torch.from_numpy(sample["pixels.npy"]),
            "label": int(sample["cls"]),
            "index": int(sample["__key__"]),
            "size": torch.tensor([info["height"], info["width"]]),
        }
        if "parts.npy" in sample:
            item["codes"] = torch.from_numpy(sample["parts.npy"])
        yield item
