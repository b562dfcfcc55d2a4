"""Part checkpoints: plain data only (loadable with ``torch.load(weights_only=True)``).

Layout: ``{"format": "semmae-parts", "version": 1, "config": {...}, "head": PartHeadSpec fields,
"encoder": FrozenEncoderSpec fields, "encoder_state": state dict or None, "model": state dict, "optimizer": state
dict, "epoch": int (epochs finished), "step": int, "rng": {...}}``. ``encoder_state`` is stored only when the
encoder has no checkpoint of its own (a random-init encoder), so that export and eval see the same encoder.
A part-learner folder (``semmae export --checkpoint PART_CHECKPOINT``) is read in the same shape.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from semmae.errors import UserError
from semmae.parts.encoder import FrozenEncoder, FrozenEncoderSpec, build_encoder
from semmae.parts.model import PartHeadSpec, PartModel
from semmae.utils.io import checkpoint_file, load_checkpoint

FORMAT = "semmae-parts"
#: the folder ``semmae export`` writes for a part learner (:mod:`semmae.parts.publish`)
EXPORT_FORMAT = "semmae-part-learner"
EXPORT_VERSION = 1
SPEC_NAME = "parts.json"
HEAD_NAME = "parts.safetensors"
ENCODER_DIR = "encoder"


def read_part_checkpoint(path: str | Path) -> dict[str, Any]:
    """A part checkpoint (a file, or a `parts train` run folder: its checkpoint.pth) as a dict; a part-learner
    folder of ``semmae export`` is read as one (:mod:`semmae.parts.publish`)."""
    if is_part_learner_dir(path):
        return read_part_learner_dir(path)
    path = checkpoint_file(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a part checkpoint written by 'semmae parts train'")
    return ckpt


def load_part_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[FrozenEncoder, PartModel, dict]:
    """Rebuild (frozen encoder, part model in eval mode, checkpoint dict) from a part checkpoint."""
    ckpt = read_part_checkpoint(path)
    head = PartHeadSpec(**ckpt["head"])
    enc_spec = FrozenEncoderSpec(**ckpt["encoder"])
    encoder = build_encoder(enc_spec, ckpt.get("encoder_state"))
    if encoder.embed_dim != head.embed_dim or encoder.grid_size != head.grid_size:
        raise UserError(
            f"encoder of {path} gives width {encoder.embed_dim} on a {encoder.grid_size}px grid but the "
            f"part head expects {head.embed_dim} on {head.grid_size}: the encoder checkpoint changed"
        )
    model = PartModel(head)
    model.load_state_dict(ckpt["model"], strict=True)
    return encoder.to(device), model.to(device).eval(), ckpt


def spec_dict(spec: Any) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def is_part_learner_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / SPEC_NAME).is_file()


def read_part_learner_dir(path: str | Path) -> dict[str, Any]:
    """A part-learner folder as the dict :func:`semmae.parts.checkpoint.load_part_model` reads (a part checkpoint
    without optimiser state), the encoder taken from its ``encoder/`` timm folder."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        spec = json.loads((path / SPEC_NAME).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path / SPEC_NAME} is not readable ({e}); re-export the part learner") from None
    if spec.get("format") != EXPORT_FORMAT or not 1 <= int(spec.get("version", 0)) <= EXPORT_VERSION:
        raise UserError(
            f"{path} is not a part-learner export this semmae reads ({EXPORT_FORMAT} 1..{EXPORT_VERSION})"
        )
    enc = spec["encoder"]
    trained = enc.get("trained_with") or {}
    return {
        "format": FORMAT,
        "version": 1,
        "config": spec.get("config", {}),
        "head": spec["head"],
        "encoder": {
            "arch": trained.get("arch", "vit_small_patch16_224"),
            "checkpoint": str(path / enc["folder"]),
            "img_size": int(enc["img_size"]),
            "feature_layer": int(enc["feature_layer"]),
        },
        "encoder_state": None,
        "model": load_file(str(path / HEAD_NAME)),
        "epoch": spec.get("epoch"),
    }
