"""``semmae export``: the pretrained encoder as a timm ``VisionTransformer`` state dict in safetensors.

The MAE's encoder keys are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``,
``norm.*``), so the file loads with
``timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=0,
pretrained_cfg_overlay=dict(file="encoder.safetensors"))``. The model description is stored as JSON in the
file's metadata (``model_config``) for :mod:`semmae.models.encoder_loading`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from semmae.engine.checkpoint import checkpoint_file, load_pretrain_checkpoint
from semmae.errors import UserError
from semmae.utils.io import atomic_write_bytes

TIMM_ARCH = {
    (768, 12, 12): "vit_base",
    (384, 12, 6): "vit_small",
    (192, 12, 3): "vit_tiny",
    (1024, 24, 16): "vit_large",
    (1280, 32, 16): "vit_huge",
}


def timm_arch_name(model_config: dict) -> str:
    """The closest timm model name (e.g. ``vit_base_patch16_224``); shape overrides are still needed for
    non-standard sizes (``img_size``, ``embed_dim``, ...)."""
    size = TIMM_ARCH.get(
        (model_config.get("embed_dim"), model_config.get("depth"), model_config.get("num_heads"))
    )
    return (
        f"{size or 'vit_base'}_patch{model_config.get('patch_size', 16)}_{model_config.get('img_size', 224)}"
    )


def encoder_from_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """``(encoder state dict in timm key names, model_config, pretraining config)`` from a pretraining checkpoint
    file or run dir."""
    from semmae.models import create_model

    path = checkpoint_file(path)
    ckpt = load_pretrain_checkpoint(path)
    model_config = dict(ckpt["model_config"])
    if (
        model_config.get("trainer") == "bootstrap"
    ):  # `semmae bootstrap`: "model" is the teacher's timm encoder
        enc = {k: v.detach().contiguous().clone() for k, v in ckpt["model"].items()}
        return enc, model_config, dict(ckpt.get("config") or {})
    overrides = {k: v for k, v in model_config.items() if k != "name"}
    model = create_model(model_config["name"], **overrides)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise UserError(
            f"checkpoint {path} does not match its model_config: {str(e).splitlines()[0]}"
        ) from None
    enc = {k: v.detach().contiguous().clone() for k, v in model.encoder_state_dict().items()}
    return enc, model_config, dict(ckpt.get("config") or {})


def export_encoder(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the encoder of ``checkpoint`` to ``out`` (``.safetensors``); returns the path."""
    from safetensors.torch import save

    enc, model_config, pretrain_config = encoder_from_checkpoint(checkpoint)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the export is a safetensors file; name it *.safetensors")
    meta = {"format": "pt", "model_config": json.dumps(model_config), "arch": timm_arch_name(model_config)}
    if (
        "fg_keep" in pretrain_config
    ):  # patch-8 SemMAE: the evaluations feed the same kept fraction (eval/kept_tokens.py)
        meta["fg_keep"] = str(float(pretrain_config["fg_keep"]))
    atomic_write_bytes(out, save(enc, metadata=meta))
    return out
