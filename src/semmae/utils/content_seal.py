"""A seal over what a single-file output holds, written inside the file: what lets ``--overwrite`` tell a file
semmae wrote from one a user changed since (or wrote with semmae's own signature copied into it).

A file semmae writes outside any folder it owns (``semmae export`` to ``*.safetensors``, ``compare --json/--csv``,
``parts eval --out``, ``masks show`` and ``parts show`` figures) has no owner marker to record what it is. Its
signature (``written_by``, a PNG's ``Software``) says who wrote it, but survives an edit: a fine-tuned encoder
re-saved with the export's metadata, a compare JSON annotated by hand, a figure retouched in an editor. So each
also carries ``semmae_sha256``, the SHA-256 of its content (without the seal itself), and is semmae's only while
that still holds. A JSON file re-indented, or a safetensors file re-saved with the same names, shapes, metadata and
weights, is still semmae's (replacing it loses nothing); a PNG re-saved by any tool is not. A JSON object that
names a key twice is never sealed (a reader sees only one of the two values).

- JSON: the top-level key ``semmae_sha256`` over the canonical form of the rest of the document;
- safetensors: the metadata entry ``semmae_sha256`` over the header (names, dtypes, shapes, the rest of the
  metadata) and the tensor data;
- PNG: the text entry ``semmae_sha256`` over every other chunk, byte for byte (pixels, frames, text, profile);
- CSV: a last line ``# semmae_sha256 <hex>`` over the lines above it (read with ``pandas.read_csv(...,
  comment="#")``; a spreadsheet shows it as a last row)."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

SEAL = "semmae_sha256"
#: a larger file is never one of the small outputs sealed as text (JSON, CSV)
_TEXT_LIMIT = 64 << 20


# -- JSON -------------------------------------------------------------------------------------------------------------
def _json_digest(doc: dict) -> str:
    rest = {k: v for k, v in doc.items() if k != SEAL}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sealed_json(doc: dict) -> dict:
    """``doc`` with its seal as the last key."""
    return {**{k: v for k, v in doc.items() if k != SEAL}, SEAL: _json_digest(doc)}


def json_file_sealed(path: Path) -> dict | None:
    """The document in the JSON file ``path`` when its seal holds; ``None`` otherwise (no seal, changed since,
    not JSON, unreadable, larger than any sealed output)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _TEXT_LIMIT:
            return None
        doc = _strict_json(path.read_bytes())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(doc, dict) or doc.get(SEAL) != _json_digest(doc):
        return None
    return doc


# -- CSV --------------------------------------------------------------------------------------------------------------
def sealed_csv(text: str) -> str:
    """CSV ``text`` (lines ending in ``\\n``) with its seal line appended."""
    return text + f"# {SEAL} {hashlib.sha256(text.encode()).hexdigest()}\n"


def csv_file_sealed(path: Path) -> bool:
    """Whether the CSV file ``path`` ends with a seal line that holds for the lines above it."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _TEXT_LIMIT:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    body, sep, last = data.rstrip(b"\n").rpartition(b"\n")
    prefix = f"# {SEAL} ".encode()
    if not last.startswith(prefix) or not data.endswith(b"\n"):
        return False
    return last[len(prefix) :].decode("ascii", "replace") == hashlib.sha256(body + sep).hexdigest()


# -- safetensors ------------------------------------------------------------------------------------------------------
_MAX_HEADER = 100 << 20


def _header_digest(header: dict) -> Any:
    """A running SHA-256 seeded with ``header`` (names, dtypes, shapes, offsets, metadata) less the seal."""
    rest = dict(header)
    meta = rest.get("__metadata__")
    if isinstance(meta, dict):
        rest["__metadata__"] = {k: v for k, v in meta.items() if k != SEAL}
    h = hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    h.update(b"\x00")
    return h


def sealed_safetensors(tensors: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """``safetensors.torch.save(tensors, metadata)`` with its seal in the metadata: the SHA-256 of the header (every
    tensor's name, dtype, shape and offsets, and the metadata) and of the tensor data. The data bytes do not depend
    on the header (offsets count from the data's start), so the file is saved once to learn them, then again."""
    from safetensors.torch import save

    plain = save(tensors, metadata={k: v for k, v in metadata.items() if k != SEAL})
    size = struct.unpack("<Q", plain[:8])[0]
    digest = _header_digest(_strict_json(plain[8 : 8 + size]))
    digest.update(memoryview(plain)[8 + size :])
    del plain
    return save(tensors, metadata={**metadata, SEAL: digest.hexdigest()})


def safetensors_file_sealed(path: Path) -> dict[str, str] | None:
    """The metadata of the safetensors file ``path`` when its seal holds for its header and tensor data; ``None``
    otherwise."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return None
            size = struct.unpack("<Q", head)[0]
            if size > _MAX_HEADER:
                return None
            header = _strict_json(fh.read(size))
            meta = header.get("__metadata__") if isinstance(header, dict) else None
            if not isinstance(meta, dict) or not isinstance(meta.get(SEAL), str):
                return None
            digest = _header_digest(header)
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except (OSError, ValueError, RecursionError):
        return None
    return meta if digest.hexdigest() == meta[SEAL] else None


# -- PNG --------------------------------------------------------------------------------------------------------------
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SEAL_TEXT = SEAL.encode("latin-1") + b"\x00"


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]] | None:
    """``(type, data)`` of every chunk of a well-formed PNG, up to ``IEND`` and nothing after it; ``None`` for
    anything else (a bad CRC included)."""
    if not png.startswith(_PNG_SIGNATURE):
        return None
    chunks, at = [], len(_PNG_SIGNATURE)
    while at + 12 <= len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        end = at + 12 + length
        if len(data) != length or end > len(png):
            return None
        if struct.unpack(">I", png[end - 4 : end])[0] != zlib.crc32(kind + data):
            return None
        chunks.append((kind, data))
        at = end
        if kind == b"IEND":
            return chunks if at == len(png) else None
    return None


def _chunks_digest(chunks: list[tuple[bytes, bytes]]) -> str:
    h = hashlib.sha256()
    for kind, data in chunks:
        if kind == b"tEXt" and data.startswith(_SEAL_TEXT):
            continue
        h.update(struct.pack(">I", len(data)) + kind + data)
    return h.hexdigest()


def sealed_png(png: bytes) -> bytes:
    """PNG bytes with their seal added as a text entry just before the image's end: the SHA-256 of every other
    chunk (pixels, frames, text, colour profile), byte for byte."""
    chunks = _png_chunks(png)
    if chunks is None:
        raise ValueError("not a well-formed PNG")
    data = _SEAL_TEXT + _chunks_digest(chunks).encode("ascii")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    end = len(png) - 12  # the IEND chunk: its length (0), type and CRC
    return png[:end] + chunk + png[end:]


def png_file_sealed(path: Path) -> dict[str, str] | None:
    """The text entries (``tEXt``) of the PNG file ``path`` when its seal holds for every other chunk; ``None``
    otherwise (a file re-saved by any editor, even with the same pixels, is not semmae's any more)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _TEXT_LIMIT:
            return None
        chunks = _png_chunks(path.read_bytes())
    except OSError:
        return None
    if chunks is None:
        return None
    seals = [d[len(_SEAL_TEXT) :] for k, d in chunks if k == b"tEXt" and d.startswith(_SEAL_TEXT)]
    if len(seals) != 1 or seals[0].decode("latin-1") != _chunks_digest(chunks):
        return None
    text = {}
    for kind, data in chunks:
        if kind == b"tEXt" and b"\x00" in data:
            key, _, value = data.partition(b"\x00")
            text[key.decode("latin-1")] = value.decode("latin-1")
    return text


def _strict_json(raw: bytes) -> Any:
    """JSON that names no key twice in one object (a second value would hide the first from every reader, and
    from the seal): a ``ValueError`` otherwise."""

    def pairs(items: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("a key named twice")
        return dict(items)

    return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
