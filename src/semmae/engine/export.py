"""``semmae export``: the pretrained encoder as a timm ``VisionTransformer`` state dict in safetensors.

The encoder keys are copied straight from the checkpoint's ``model`` state dict (wrapper prefixes stripped, the
MAE decoder and mask token dropped: :func:`semmae.models.encoder_record.encoder_state_dict`); no model is built.
The MAE's encoder keys are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``,
``norm.*``), and a ``semmae bootstrap`` checkpoint's ``model`` is a timm ViT already, so the file loads with
``timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=0,
pretrained_cfg_overlay=dict(file="encoder.safetensors"))``. The checkpoint's encoder record
(:class:`semmae.models.encoder_record.EncoderRecord`) is stored as JSON in the file's metadata (``model_config``)
for :mod:`semmae.models.encoder_loading`, next to ``arch`` (:meth:`EncoderRecord.timm_name`) and ``fg_keep``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from semmae.engine.checkpoint import checkpoint_file, load_pretrain_checkpoint
from semmae.errors import UserError
from semmae.models.encoder_loading import checkpoint_record, record_misfits
from semmae.models.encoder_record import EncoderRecord, encoder_state_dict
from semmae.utils.io import atomic_write_bytes


def encoder_from_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], EncoderRecord]:
    """``(encoder state dict in timm key names, encoder record)`` from a pretraining (or bootstrap) checkpoint
    file or run dir; the weights are checked against the record."""
    path = checkpoint_file(path)
    ckpt = load_pretrain_checkpoint(path)
    record = checkpoint_record(ckpt, f"checkpoint {path}")
    if record is None:
        raise UserError(f"checkpoint {path} has a model_config without the encoder sizes")
    enc, _ = encoder_state_dict(ckpt["model"])
    misfit = record_misfits(record, enc)
    if misfit:
        raise UserError(f"checkpoint {path} does not match its model_config: {'; '.join(misfit)}")
    return {k: v.detach().contiguous().clone() for k, v in enc.items()}, record


def export_encoder(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the encoder of ``checkpoint`` to ``out`` (``.safetensors``); returns the path."""
    from safetensors.torch import save

    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the export is a safetensors file; name it *.safetensors")
    enc, record = encoder_from_checkpoint(checkpoint)
    meta = {"format": "pt", "model_config": json.dumps(record.to_dict()), "arch": record.timm_name()}
    if (
        record.fg_keep is not None
    ):  # patch-8 SemMAE: the evaluations feed the same kept fraction (kept_tokens.py)
        meta["fg_keep"] = str(record.fg_keep)
    atomic_write_bytes(out, save(enc, metadata=meta))
    return out
