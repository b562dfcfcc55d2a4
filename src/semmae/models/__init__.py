"""The masked autoencoder (He et al. 2022) fed by external masks, and encoder checkpoint interop.

The names below load on first use (PEP 562), so that importing a light submodule (the ``--init`` choices that
``semmae <verb> --help`` shows) does not import torch and timm."""

from __future__ import annotations

from semmae.utils.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    globals(),
    encoder_record=("EncoderRecord",),
    mae=("MAEConfig", "MaskedAutoencoder"),
    patches=("patchify", "reconstruct_images", "unpatchify"),
    registry=("create_model", "list_models", "model_config", "register_model"),
)
