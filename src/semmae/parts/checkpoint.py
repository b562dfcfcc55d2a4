"""Part checkpoints: plain data only (loadable with ``torch.load(weights_only=True)``).

Layout: the trainer's (:mod:`semmae.models.checkpoint_schema`, ``"kind": "parts"``: model, optimizer, scaler, step, epoch
(epochs finished), rng, config, ``"encoder"``: the frozen encoder's record) plus ``{"format": "semmae-parts",
"version": 2, "head": PartHeadSpec fields, "frozen_encoder": FrozenEncoderSpec fields, "encoder_state": state dict
or None, "metrics", "diagnostics"}``. ``encoder_state`` is stored only when the encoder has no checkpoint of its
own (a random-init encoder), so that export and eval see the same encoder. Version 1 files (before the one layout:
the spec under ``"encoder"``) are read in the same shape (:func:`semmae.models.checkpoint_schema.upgrade`), and
so is a part-learner folder (``semmae export --checkpoint PART_CHECKPOINT``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from semmae.errors import UserError
from semmae.models.checkpoint_schema import PARTS_FORMAT, PARTS_VERSION, TrainState, read_train_state
from semmae.parts.encoder import FrozenEncoder, FrozenEncoderSpec, build_encoder
from semmae.parts.model import PartHeadSpec, PartModel
from semmae.utils.io import checkpoint_file, load_checkpoint

FORMAT = PARTS_FORMAT
#: the file ``semmae parts train`` writes into its run folder
CHECKPOINT_NAME = "checkpoint.pth"
#: the folder ``semmae export`` writes for a part learner (:mod:`semmae.export.part_learner`)
EXPORT_FORMAT = "semmae-part-learner"
EXPORT_VERSION = 1
SPEC_NAME = "parts.json"
HEAD_NAME = "parts.safetensors"
ENCODER_DIR = "encoder"
FORMAT_VERSION = PARTS_VERSION  # 2: the trainer's one layout (issue 27)


def read_part_checkpoint(path: str | Path) -> TrainState:
    """A part checkpoint (a file, or a `parts train` run folder: its checkpoint.pth), older layouts upgraded
    (:func:`semmae.models.checkpoint_schema.upgrade`); a part-learner folder of ``semmae export`` is read as one
    (:mod:`semmae.export.part_learner`)."""
    if is_part_learner_dir(path):
        return read_part_learner_dir(path)
    path = checkpoint_file(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a part checkpoint written by 'semmae parts train'")
    return read_train_state(ckpt, source=str(path))


def part_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint ``semmae parts train`` wrote into ``run_dir``; ``UserError`` if there is none."""
    ckpt = Path(run_dir) / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise UserError(f"part learning wrote no checkpoint at {ckpt}")
    return ckpt


def load_part_model(
    path: str | Path, device: torch.device | str = "cpu", ckpt: dict[str, Any] | None = None
) -> tuple[FrozenEncoder, PartModel, TrainState]:
    """Rebuild (frozen encoder, part model in eval mode, checkpoint) from a part checkpoint (``ckpt``: the part
    checkpoint file ``path`` already loaded, not read again)."""
    state = read_part_checkpoint(path) if ckpt is None else read_train_state(ckpt, source=str(path))
    head = PartHeadSpec(**state.extra["head"])
    enc_spec = FrozenEncoderSpec(**state.extra["frozen_encoder"])
    encoder = build_encoder(enc_spec, state.extra.get("encoder_state"))
    if encoder.embed_dim != head.embed_dim or encoder.grid_size != head.grid_size:
        raise UserError(
            f"encoder of {path} gives width {encoder.embed_dim} on a {encoder.grid_size}px grid but the "
            f"part head expects {head.embed_dim} on {head.grid_size}: the encoder checkpoint changed"
        )
    model = PartModel(head)
    model.load_state_dict(state.model, strict=True)
    return encoder.to(device), model.to(device).eval(), state


def spec_dict(spec: Any) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def is_part_learner_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / SPEC_NAME).is_file()


def read_part_learner_dir(path: str | Path) -> TrainState:
    """A part-learner folder as the checkpoint :func:`semmae.parts.checkpoint.load_part_model` reads (a part
    checkpoint without optimiser state), the encoder taken from its ``encoder/`` timm folder."""
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
    return TrainState(
        kind="parts",
        config=spec.get("config", {}),
        model=load_file(str(path / HEAD_NAME)),
        epoch=spec.get("epoch"),
        extra={
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "head": spec["head"],
            "frozen_encoder": {
                "arch": trained.get("arch", "vit_small_patch16_224"),
                "checkpoint": str(path / enc["folder"]),
                "img_size": int(enc["img_size"]),
                "feature_layer": int(enc["feature_layer"]),
            },
            "encoder_state": None,
        },
    )
