"""Part checkpoints: plain data only (loadable with ``torch.load(weights_only=True)``).

Layout: ``{"format": "semmae-parts", "version": 1, "config": {...}, "head": PartHeadSpec fields,
"encoder": FrozenEncoderSpec fields, "encoder_state": state dict or None, "model": state dict, "optimizer": state
dict, "epoch": int (epochs finished), "step": int, "rng": {...}}``. ``encoder_state`` is stored only when the
encoder has no checkpoint of its own (a random-init encoder), so that export and eval see the same encoder.
A part-learner folder (``semmae export --checkpoint PART_CHECKPOINT``) is read in the same shape.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from semmae.errors import UserError
from semmae.parts.encoder import FrozenEncoder, FrozenEncoderSpec, build_encoder
from semmae.parts.model import PartHeadSpec, PartModel
from semmae.utils.io import checkpoint_file, load_checkpoint

FORMAT = "semmae-parts"


def read_part_checkpoint(path: str | Path) -> dict[str, Any]:
    """A part checkpoint (a file, or a `parts train` run folder: its checkpoint.pth) as a dict; a part-learner
    folder of ``semmae export`` is read as one (:mod:`semmae.parts.publish`)."""
    from semmae.parts.publish import is_part_learner_dir, read_part_learner_dir

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
