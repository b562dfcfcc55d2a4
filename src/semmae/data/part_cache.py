"""The part-map cache: what part learning (paper Sec. 3.1) hands to semantic-guided masking (Sec. 3.2).

For every image of a dataset (in :class:`~semmae.data.folder.ImageFolderDataset` order) it stores, per cell of a
``G x G`` grid, the argmax part id and a foreground score, packed in ONE byte per cell::

    code = part_id << fg_bits | round(fg * (2**fg_bits - 1))

with ``part_bits = ceil(log2(num_parts + 1))`` (ids ``0..num_parts-1`` are parts, ``num_parts`` is the reserved
"no part" id) and ``fg_bits = 8 - part_bits`` (6 parts: 3 + 5 bits, 32 foreground levels). A 28x28 grid thus
costs 784 bytes per image; the official SemMAE release stored 196 x 975 float32 = 764 KB per image.

Layout of a cache folder::

    meta.json    format version, grid, num_parts, bit split, image count, file-list digest, producer
    files.txt    the dataset's relative file list (to explain a mismatch)
    codes.u8     uint8 [num_images, G * G], memory-mapped by every DataLoader worker

Writing happens in ``<path>.partial/`` chunk by chunk with a progress record after each chunk; an interrupted
write resumes where it stopped, and only :meth:`PartCacheWriter.finalize` renames the folder to ``<path>``, so a
reader never sees a half-written cache.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semmae.data.folder import file_list_digest
from semmae.errors import UserError
from semmae.utils.io import atomic_write_json, atomic_write_text

FORMAT_VERSION = 1
MAX_PARTS = 15  # keeps at least 4 foreground bits


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
        self._codes: np.memmap | None = None  # opened lazily, once per process (DataLoader workers)

    # -- construction ---------------------------------------------------------------------------------------
    @staticmethod
    def create(
        path: str | Path,
        relative_paths: list[str],
        grid: int,
        num_parts: int,
        producer: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> PartCacheWriter:
        """Start (or resume) writing a cache for a dataset's file list. See :class:`PartCacheWriter`."""
        return PartCacheWriter(Path(path), relative_paths, grid, num_parts, producer or {}, overwrite)

    @staticmethod
    def open(path: str | Path, relative_paths: list[str] | None = None) -> PartCache:
        """Open a finished cache; with ``relative_paths``, refuse it unless it was made for that file list."""
        path = Path(path)
        partial = _partial_path(path)
        if not path.exists():
            if partial.exists():
                raise UserError(
                    f"part cache {path} is unfinished (an export was interrupted); rerun the export with "
                    "the same arguments to resume it"
                )
            raise UserError(f"part cache {path} does not exist")
        meta_path = path / "meta.json"
        if not path.is_dir() or not meta_path.is_file():
            raise UserError(
                f"{path} is not a part cache (no meta.json); create one with `semmae parts export`"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"part cache {path}: meta.json is corrupt ({e})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"part cache {path} has format version {meta.get('format_version')}, this semmae reads "
                f"version {FORMAT_VERSION}; re-export it"
            )
        cells = int(meta["grid"]) ** 2
        expected = int(meta["num_images"]) * cells
        size = (path / "codes.u8").stat().st_size if (path / "codes.u8").exists() else -1
        if size != expected:
            raise UserError(
                f"part cache {path}: codes.u8 has {size} bytes, expected {expected} "
                f"({meta['num_images']} images x {cells} cells); the cache is corrupt, re-export it"
            )
        cache = PartCache(path, meta)
        if relative_paths is not None:
            cache.check_matches(relative_paths)
        return cache

    def check_matches(self, relative_paths: list[str]) -> None:
        """Raise UserError unless the cache was written for exactly this file list (same files, same order)."""
        if file_list_digest(relative_paths) == self.meta["file_list_digest"]:
            return
        theirs = (
            (self.path / "files.txt").read_text().splitlines() if (self.path / "files.txt").exists() else []
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

    # -- reading --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.meta["num_images"])

    def _array(self) -> np.memmap:
        if self._codes is None:
            self._codes = np.memmap(
                self.path / "codes.u8", dtype=np.uint8, mode="r", shape=(len(self), self.grid * self.grid)
            )
        return self._codes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"part cache index {index} out of range 0..{len(self) - 1}")
        part, fg = decode_cells(self._array()[index], self.num_parts)
        g = self.grid
        return torch.from_numpy(part.reshape(g, g)), torch.from_numpy(fg.reshape(g, g))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open the memmap themselves
        state = self.__dict__.copy()
        state["_codes"] = None
        return state

    @property
    def bytes_per_image(self) -> int:
        return self.grid * self.grid


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


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
            "producer": producer,
        }
        if path.exists():
            if not overwrite:
                raise UserError(f"part cache {path} already exists; pass --overwrite to replace it")
            shutil.rmtree(path)
        progress_path = self.partial / "progress.json"
        if self.partial.exists() and progress_path.exists():
            old = json.loads((self.partial / "meta.json").read_text())
            if old != self.meta:
                changed = sorted(k for k in self.meta if old.get(k) != self.meta[k])
                raise UserError(
                    f"an unfinished part cache at {self.partial} was started with other settings "
                    f"({', '.join(changed)} differ); delete it or rerun with the same settings"
                )
            self.next_index = int(json.loads(progress_path.read_text())["next_index"])
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            atomic_write_text(self.partial / "files.txt", "\n".join(relative_paths) + "\n")
            with open(self.partial / "codes.u8", "wb") as fh:
                fh.truncate(len(relative_paths) * grid * grid)
            atomic_write_json(self.partial / "meta.json", self.meta)
            self.next_index = 0
            self._record_progress()
        self._codes = np.memmap(
            self.partial / "codes.u8", dtype=np.uint8, mode="r+", shape=(len(relative_paths), grid * grid)
        )

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
        self._codes[start : start + n] = encode_cells(part_ids, fg, self.num_parts).reshape(n, -1)
        self._codes.flush()
        self.next_index = start + n
        self._record_progress()

    def finalize(self) -> PartCache:
        """Publish the finished cache at its path (atomic rename) and return it opened."""
        if not self.done:
            raise UserError(
                f"part cache {self.partial} is incomplete: {self.next_index}/{self.num_images} images"
            )
        del self._codes
        with open(self.partial / "codes.u8", "rb+") as fh:
            os.fsync(fh.fileno())
        (self.partial / "progress.json").unlink()
        os.replace(self.partial, self.path)
        return PartCache.open(self.path)
