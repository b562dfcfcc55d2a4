"""The masked autoencoder (He et al. 2022) fed by external masks, and encoder checkpoint interop."""

from semmae.models.mae import MAEConfig, MaskedAutoencoder
from semmae.models.mae_checkpoints import load_mae_checkpoint
from semmae.models.patches import patchify, reconstruct_images, unpatchify
from semmae.models.registry import create_model, list_models, model_config, register_model

__all__ = [
    "MAEConfig",
    "MaskedAutoencoder",
    "create_model",
    "list_models",
    "load_mae_checkpoint",
    "model_config",
    "patchify",
    "reconstruct_images",
    "register_model",
    "unpatchify",
]
