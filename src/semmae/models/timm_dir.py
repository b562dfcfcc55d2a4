"""A timm model folder: ``config.json`` + ``model.safetensors`` (+ ``README.md``), the layout
``timm.create_model("local-dir:PATH", pretrained=True)`` and the Hugging Face Hub (``hf-hub:USER/REPO``) read.

timm builds ``config["architecture"]`` (a registered name) with ``config["model_args"]`` as keyword overrides, so
any encoder size fits: the CPU presets' width-192, depth-6, patch-8 ViT at 64 px has no timm name and is built as
``vit_tiny_patch16_224`` with ``img_size=64, patch_size=8, depth=6``. ``pretrained_cfg`` carries what
``timm.data.resolve_data_config`` needs (input size, mean/std, crop) and ``num_classes: 0`` (features, no head).
``model.safetensors`` carries the same metadata as ``semmae export --format safetensors`` (the encoder record), so
:func:`semmae.models.encoder_loading.load_encoder` reads the folder as the file. This module is the reading side
and the layout's names; ``semmae export`` writes the folder (:func:`semmae.export.encoder.write_timm_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.models.encoder_record import EncoderRecord, parse_arch
from semmae.utils.io import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PAPER = "SemMAE: Semantic-Guided Masking for Learning Masked Autoencoders (Li et al., NeurIPS 2022)"
PAPER_ID = "arXiv:2206.10207"


def is_timm_dir(path: str | Path) -> bool:
    """True for a folder holding a ``config.json`` (a timm model folder, ours or not)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def read_timm_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of the timm folder ``path``; a :class:`UserError` when it is missing or not JSON."""
    return read_json(
        Path(path) / CONFIG_NAME,
        missing=f"{path} is not a timm model folder: it has no {CONFIG_NAME}",
        hint="; re-export the folder with `semmae export`",
    )


def config_sizes(config: dict[str, Any]) -> dict[str, Any]:
    """The encoder sizes a timm ``config.json`` implies (its architecture's name, then ``model_args``, then the
    input size), as a partial ``model_config`` for :meth:`EncoderRecord.from_state_dict`."""
    sizes: dict[str, Any] = {}
    try:
        sizes.update(parse_arch(str(config.get("architecture", ""))))
    except UserError:
        pass
    args = config.get("model_args") or {}
    for key, value in args.items():
        if key not in EncoderRecord.ARCH_FIELDS or value is None:
            continue
        if isinstance(value, (list, tuple)):  # timm writes sizes as [h, w]
            if len(set(value)) != 1:
                raise UserError(f"timm config {key} {value} is not square; semmae encoders are square")
            value = value[0]
        sizes[key] = value
    input_size = (config.get("pretrained_cfg") or {}).get("input_size")
    if "img_size" not in args and isinstance(input_size, (list, tuple)) and len(input_size) == 3:
        sizes["img_size"] = int(input_size[-1])
    return sizes
