"""The masked autoencoder (He et al. 2022) fed by external masks, and encoder checkpoint interop.

The names below load on first use (PEP 562), so that importing a light submodule (the ``--init`` choices that
``semmae <verb> --help`` shows) does not import torch and timm."""

from __future__ import annotations

import importlib

_HOMES = {
    "EncoderRecord": "encoder_record",
    "MAEConfig": "mae",
    "MaskedAutoencoder": "mae",
    "patchify": "patches",
    "reconstruct_images": "patches",
    "unpatchify": "patches",
    "create_model": "registry",
    "list_models": "registry",
    "model_config": "registry",
    "register_model": "registry",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    return value
