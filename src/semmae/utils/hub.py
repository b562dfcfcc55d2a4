"""The Hugging Face Hub (``huggingface_hub``, installed with timm), the reading side:
:func:`hf_model_files` - ``hf-hub:ORG/NAME[@REVISION]`` as a checkpoint (:mod:`semmae.utils.remote`): the model's
``config.json`` and weights downloaded into the Hub cache, as timm's ``hf-hub:`` loader does. The upload
(``semmae export --push-to-hub``) is :mod:`semmae.export.hub`.

The endpoint (``HF_ENDPOINT``), cache (``HF_HUB_CACHE`` / ``HF_HOME``) and ``HF_HUB_OFFLINE`` are read at call time.
Every failure (no network, no token, no rights, no such model) is one :class:`UserError` line naming the cause.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from semmae.errors import UserError

#: the weight files of a timm model repo, in the order timm's ``load_state_dict_from_hf`` prefers them
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_cache_dir() -> Path:
    """The Hub cache folder: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HUB_CACHE"])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def _offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in ("1", "on", "yes", "true")


def hf_model_files(model_id: str) -> Path:
    """Download the timm model ``model_id`` (``ORG/NAME`` or ``ORG/NAME@REVISION``, what follows ``hf-hub:``) into
    the Hub cache and return what :func:`semmae.models.encoder_loading.load_encoder` reads: the snapshot folder
    (``config.json`` + ``model.safetensors``, a timm model folder) or, for a repo without that pair, the weights
    file. Files already in the cache are used without touching the network (so a fetched name works offline);
    an unreachable endpoint is one line at once, not the Hub client's minute of retries."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise UserError(f"hf-hub:{model_id} needs huggingface_hub: pip install huggingface_hub") from None
    repo, _, revision = model_id.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(f"hf-hub:{model_id} is not a model name: write hf-hub:ORG/NAME[@REVISION]")
    endpoint, cache = hf_endpoint(), hf_cache_dir()
    name = f"hf-hub:{model_id}"
    probed: list[bool] = []

    def download(filename: str) -> Path | None:
        cached = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision or None)
        if isinstance(cached, str):
            return Path(cached)
        if cached is not None:  # the Hub said before that the repo has no such file
            return None
        if _offline() or not probed:
            cause = "HF_HUB_OFFLINE is set" if _offline() else _unreachable(endpoint)
            if cause:
                fix = "unset HF_HUB_OFFLINE" if _offline() else "check the network"
                raise UserError(
                    f"{name}: {cause} and {filename} is not in the Hub cache {cache}; {fix} and run again, or "
                    "point HF_HOME / HF_HUB_CACHE at a cache that holds it"
                )
            probed.append(True)
        try:
            with _quiet_hub_logs():
                return Path(
                    hf_hub_download(
                        repo,
                        filename,
                        revision=revision or None,
                        cache_dir=cache,
                        endpoint=endpoint,
                        library_name="semmae",
                    )
                )
        except GatedRepoError:
            raise UserError(
                f"{name}: the model is gated on {endpoint}; accept its terms there and log in (HF_TOKEN)"
            ) from None
        except RepositoryNotFoundError:
            raise UserError(
                f"{name}: no model {repo} on {endpoint} (or it is private: set HF_TOKEN); check the name"
            ) from None
        except RevisionNotFoundError:
            raise UserError(f"{name}: model {repo} has no revision {revision!r} on {endpoint}") from None
        except EntryNotFoundError as e:
            if isinstance(e, FileNotFoundError):  # LocalEntryNotFoundError: the connection failed on the way
                raise UserError(
                    f"{name}: {endpoint} cannot be reached ({_cause(e)}) and {filename} is not in the Hub cache "
                    f"{cache}; check the network and run again"
                ) from None
            return None
        except Exception as e:  # noqa: BLE001 - HTTP, disk and server errors all end the command in one line
            raise UserError(
                f"{name}: downloading {filename} from {endpoint} into {cache} failed ({_cause(e)})"
            ) from None

    config = download("config.json")
    for filename in HF_WEIGHT_FILES:
        weights = download(filename)
        if weights is not None:
            paired = (
                config is not None and filename.endswith(".safetensors") and weights.parent == config.parent
            )
            return weights.parent if paired else weights
    raise UserError(f"{name}: model {repo} on {endpoint} has none of {', '.join(HF_WEIGHT_FILES)}")


def _unreachable(endpoint: str, timeout: float = 10.0) -> str | None:
    """Why ``endpoint`` cannot be reached (one TCP connection: no route, refused, no DNS), None when it can - or
    when a proxy is configured, which the Hub client then goes through."""
    import socket
    from urllib.parse import urlsplit

    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    ):
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{endpoint} cannot be reached ({e.strerror or type(e).__name__})"
    return None


@contextlib.contextmanager
def _quiet_hub_logs():
    """The Hub client's retry warnings off for the call: the outcome is reported as one line."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _cause(e: BaseException) -> str:
    """``Type: message`` of ``e``, else of what caused it (a connection error under the Hub's wrapper), on one
    short line."""
    seen = e
    while seen.__cause__ is not None and not str(seen).strip():
        seen = seen.__cause__
    if isinstance(e.__cause__, (OSError, ConnectionError)) or "httpx" in type(e.__cause__).__module__:
        seen = e.__cause__
    text = " ".join(str(seen).split())[:200]
    return f"{type(seen).__name__}: {text}" if text else type(seen).__name__
