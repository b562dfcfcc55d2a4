"""Encoders by name: a checkpoint argument (``--checkpoint``, ``--encoder-checkpoint``, the Python loader) may name a
remote file instead of a local one. :func:`semmae.utils.io.checkpoint_file` resolves it here to the cached local
file, which then goes through the one loader (:func:`semmae.models.encoder_loading.load_encoder`) and its layout
checks exactly as a local file does.

* ``hf-hub:ORG/NAME[@REVISION]`` (e.g. ``hf-hub:timm/vit_small_patch16_224.dino``): a timm model on the Hugging
  Face Hub, downloaded into the Hub cache (:func:`semmae.utils.hub.hf_model_files`; ``HF_ENDPOINT``, ``HF_HOME``,
  ``HF_HUB_OFFLINE`` apply) -> a timm model folder (``config.json`` + ``model.safetensors``).
* ``https://...`` (or ``http://``) with an optional ``#sha256=<64 hex>``: downloaded with torch's own
  ``torch.hub.download_url_to_file`` into ``torch.hub.get_dir()/checkpoints`` (``TORCH_HOME`` applies), as
  ``<first 12 hex of the URL's sha256>-<file name>`` so that two releases with the same file name
  (``.../vits_16/checkpoint_teacher.pth``, ``.../vitb_16/checkpoint_teacher.pth``) never share a cache entry. torch
  writes to a ``.partial`` file and renames it when complete, so an interrupted download leaves nothing half-done
  in the cache (it starts over on the next run). A given sha256 is checked on every use, cached or not.

A cached file is used without touching the network, so a name works offline once it was fetched. A failure
(offline, unreachable, HTTP error, wrong sha256) is one :class:`UserError` line naming the cause and the cache folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sys
from pathlib import Path, PurePath
from urllib.parse import urlsplit

from semmae.errors import UserError

HF_PREFIXES = ("hf-hub:", "hf_hub:")  # timm spells it both ways
#: a URL, also one that ``pathlib.Path`` collapsed (``https:/host/...``)
_URL_RE = re.compile(r"^(https?):/+(?=[^/])", re.IGNORECASE)
_SHA_RE = re.compile(r"#sha256=([0-9a-fA-F]*)$")
#: seconds a stalled connection may wait before the download gives up (torch's urlopen sets none)
DOWNLOAD_TIMEOUT_S = 60.0


def remote_name(value: object) -> str | None:
    """The remote name ``value`` spells (``hf-hub:...`` or a URL, a path-collapsed URL restored), None for a local
    path. A local file or folder of that name wins."""
    if not isinstance(value, (str, PurePath)):
        return None
    text = str(value)
    if ":" not in text or os.path.exists(text):
        return None
    if text.lower().startswith(HF_PREFIXES):
        return "hf-hub:" + text.split(":", 1)[1]
    m = _URL_RE.match(text)
    if m:
        return f"{m.group(1).lower()}://{text[m.end() :]}"
    return None


def is_remote(value: object) -> bool:
    return remote_name(value) is not None


def fetch_checkpoint(value: str | PurePath) -> Path:
    """The local file (or timm model folder) for the remote name ``value``, downloaded when not cached yet."""
    name = remote_name(value)
    if name is None:
        raise UserError(f"{value} is not a remote checkpoint name (hf-hub:ORG/NAME or https://...)")
    if name.startswith("hf-hub:"):
        from semmae.utils.hub import hf_model_files

        return hf_model_files(name[len("hf-hub:") :])
    return fetch_url(name)


def split_sha256(url: str) -> tuple[str, str | None]:
    """``URL#sha256=<hex>`` -> ``(URL, hex)``; a URL without one -> ``(URL, None)``."""
    m = _SHA_RE.search(url)
    if m is None:
        return url, None
    digest = m.group(1).lower()
    if len(digest) != 64:
        raise UserError(f"{url}: #sha256= needs the file's full SHA-256 (64 hex digits), got {len(digest)}")
    return url[: m.start()], digest


def url_cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, where ``torch.hub.load_state_dict_from_url`` caches too."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def url_cache_file(url: str) -> Path:
    """The cache file of ``url`` (without its ``#sha256=``): ``<12 hex of sha256(url)>-<file name>``."""
    url, _ = split_sha256(url)
    base = os.path.basename(urlsplit(url).path) or "download"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return url_cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def fetch_url(url: str) -> Path:
    """Download ``url`` (``#sha256=<hex>`` optional) into torch's hub cache unless it is there; return the file."""
    url, digest = split_sha256(url)
    dst = url_cache_file(url)
    downloaded = False
    if not dst.is_file():
        _download(url, dst)
        downloaded = True
    if digest is not None:
        found = _sha256(dst)
        if found != digest:
            if downloaded:
                dst.unlink(missing_ok=True)
            what = (
                "the downloaded file (removed)"
                if downloaded
                else f"the cached file {dst} (delete it to re-download)"
            )
            raise UserError(
                f"{url}: sha256 mismatch: {what} has {found[:16]}..., #sha256= expects {digest[:16]}...; check the "
                "URL and the digest"
            )
    return dst


def _download(url: str, dst: Path) -> None:
    import http.client
    import urllib.error

    from torch.hub import download_url_to_file

    cache = dst.parent
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the download cache {cache}: {e.strerror or e} (set TORCH_HOME)"
        ) from None
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            download_url_to_file(url, str(dst), progress=sys.stderr.isatty())
    except urllib.error.HTTPError as e:
        raise UserError(
            f"cannot download {url}: HTTP {e.code} {e.reason}; nothing was cached in {cache} - check the URL"
        ) from None
    except (
        OSError,
        ValueError,
        http.client.HTTPException,
    ) as e:  # URLError is an OSError: offline, refused, DNS
        reason = getattr(e, "reason", None) or e
        cause = " ".join(str(reason).split())[:200] or type(e).__name__
        raise UserError(
            f"cannot download {url} ({cause}) and it is not in the cache folder {cache}: check the network, or put "
            f"the file there as {dst.name}"
        ) from None


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """A default socket timeout for the download (torch's ``urlopen`` passes none, so a stalled server would hang)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if old is None else old)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
