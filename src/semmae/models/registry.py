"""Registered MAE architectures, timm-style: ``create_model(name, **overrides)``, ``list_models()``.

Names encode the configuration: ``mae_vit_base_patch16`` (also ``mae_vit_base_patch16_dec512d8b``, the
official MAE name). ``_patch8`` variants are the paper's ViT-B/8 setting (a 28x28 grid at 224 px, of which a
foreground quarter enters the model). ``mae_vit_micro_*`` are test-sized (32 px, width 32, depth 2).
"""

from __future__ import annotations

import dataclasses

from semmae.errors import UserError
from semmae.models.encoder_record import VIT_SIZES
from semmae.models.mae import MAEConfig, MaskedAutoencoder

__all__ = ["create_model", "list_models", "model_config", "register_model"]

_REGISTRY: dict[str, MAEConfig] = {}


def register_model(name: str, config: MAEConfig, alias: bool = True) -> None:
    """Register ``name`` (and, with ``alias``, ``name_dec{D}d{depth}b``) for ``config``."""
    _REGISTRY[name] = config
    if alias:
        _REGISTRY[f"{name}_dec{config.decoder_embed_dim}d{config.decoder_depth}b"] = config


# per encoder size (VIT_SIZES): the MAE decoder (width, depth, heads), the image size and the registered patches
_MAE_SIZES = {
    "micro": ((32, 1, 2), 32, (8, 4)),
    "tiny": ((128, 4, 4), 224, (16, 8)),
    "small": ((256, 4, 8), 224, (16, 8)),
    "base": ((512, 8, 16), 224, (16, 8)),
    "large": ((512, 8, 16), 224, (16, 8)),
    "huge": ((512, 8, 16), 224, (14,)),
}

for _size, ((_dd, _dn, _dh), _img, _patches) in _MAE_SIZES.items():
    _d, _n, _h = VIT_SIZES[_size]
    for _p in _patches:
        register_model(
            f"mae_vit_{_size}_patch{_p}",
            MAEConfig(
                img_size=_img,
                patch_size=_p,
                embed_dim=_d,
                depth=_n,
                num_heads=_h,
                decoder_embed_dim=_dd,
                decoder_depth=_dn,
                decoder_num_heads=_dh,
            ),
        )


def list_models() -> list[str]:
    """All registered names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> MAEConfig:
    """The config of ``name`` with ``overrides`` applied (``None`` values are ignored)."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    fields = {f.name for f in dataclasses.fields(MAEConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    config = dataclasses.replace(_REGISTRY[name], **{k: v for k, v in overrides.items() if v is not None})
    try:
        config.validate()
    except ValueError as e:
        raise UserError(f"model {name}: {e}") from None
    return config


def create_model(name: str, **overrides) -> MaskedAutoencoder:
    """Build a registered MAE, e.g. ``create_model("mae_vit_base_patch8", img_size=224)``."""
    return MaskedAutoencoder(model_config(name, **overrides), name=name)
