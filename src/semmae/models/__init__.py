"""The masked autoencoder (He et al. 2022) fed by external masks, and encoder checkpoint interop."""

from semmae.models.encoder_record import EncoderRecord
from semmae.models.mae import MAEConfig, MaskedAutoencoder
from semmae.models.patches import patchify, reconstruct_images, unpatchify
from semmae.models.registry import create_model, list_models, model_config, register_model

__all__ = [
    "EncoderRecord",
    "MAEConfig",
    "MaskedAutoencoder",
    "create_model",
    "list_models",
    "model_config",
    "patchify",
    "reconstruct_images",
    "register_model",
    "unpatchify",
]
