"""A seal over what a single-file output holds, written inside the file: what lets ``--overwrite`` tell a file
semmae wrote from one a user changed since (or wrote with semmae's own signature copied into it).

A file semmae writes outside any folder it owns (``semmae export`` to ``*.safetensors``, ``compare --json/--csv``,
``parts eval --out``, ``masks show`` and ``parts show`` figures) has no owner marker to record what it is. Its
signature (``written_by``, a PNG's ``Software``) says who wrote it, but survives an edit: a fine-tuned encoder
re-saved with the export's metadata, a compare JSON annotated by hand, a figure retouched in an editor. So each
also carries ``semmae_sha256``, the SHA-256 of its content (without the seal itself), and is semmae's only while
that still holds. A file re-saved with exactly the content semmae wrote (re-indented JSON, a re-encoded PNG of the
same pixels) is still semmae's: replacing it loses nothing.

- JSON: the top-level key ``semmae_sha256`` over the canonical form of the rest of the document;
- safetensors: the metadata entry ``semmae_sha256`` over the tensor data (the bytes after the header);
- PNG: the text entry ``semmae_sha256`` over the decoded pixels (mode, size, bytes);
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
        doc = json.loads(path.read_bytes().decode("utf-8"))
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
def _safetensors_header_size(blob: bytes) -> int:
    return 8 + struct.unpack("<Q", blob[:8])[0]


def sealed_safetensors(tensors: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """``safetensors.torch.save(tensors, metadata)`` with the seal of its tensor data in the metadata (the data
    bytes do not depend on the header: offsets count from the data's start)."""
    from safetensors.torch import save

    plain = save(tensors, metadata={k: v for k, v in metadata.items() if k != SEAL})
    digest = hashlib.sha256(memoryview(plain)[_safetensors_header_size(plain) :]).hexdigest()
    del plain
    return save(tensors, metadata={**metadata, SEAL: digest})


def safetensors_file_sealed(path: Path) -> dict[str, str] | None:
    """The metadata of the safetensors file ``path`` when its seal holds for its tensor data; ``None``
    otherwise."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return None
            size = struct.unpack("<Q", head)[0]
            if size > 100 << 20:
                return None
            header = json.loads(fh.read(size).decode("utf-8"))
            meta = header.get("__metadata__") if isinstance(header, dict) else None
            if not isinstance(meta, dict) or not isinstance(meta.get(SEAL), str):
                return None
            digest = hashlib.sha256()
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except (OSError, ValueError, RecursionError):
        return None
    return meta if digest.hexdigest() == meta[SEAL] else None


# -- PNG --------------------------------------------------------------------------------------------------------------
def _pixels_digest(image: Any) -> str:
    h = hashlib.sha256(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def sealed_png(png: bytes) -> bytes:
    """PNG bytes with the seal of their pixels added as a text entry (just before the image's end; the pixels and
    every other chunk stay as they are)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        digest = _pixels_digest(im)
    data = SEAL.encode("latin-1") + b"\x00" + digest.encode("ascii")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    end = png.rindex(b"IEND") - 4  # the IEND chunk: its length (0), type and CRC
    return png[:end] + chunk + png[end:]


def png_file_sealed(path: Path) -> dict[str, str] | None:
    """The text entries of the PNG file ``path`` when its seal holds for its pixels; ``None`` otherwise."""
    from PIL import Image

    try:
        if path.is_symlink() or not path.is_file():
            return None
        with Image.open(path) as im:
            if im.format != "PNG":
                return None
            text = dict(getattr(im, "text", {}))
            if text.get(SEAL) != _pixels_digest(im):
                return None
    except Exception:  # noqa: BLE001 - not an image PIL can open
        return None
    return text
