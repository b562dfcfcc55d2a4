"""The masked autoencoder (He et al. 2022) fed by external masks, and encoder checkpoint interop.

The names below load on first use (PEP 562), so that importing a light submodule (the ``--init`` choices that
``semmae <verb> --help`` shows) does not import torch and timm."""

from __future__ import annotations

from semmae.utils.lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _HOMES, globals())
