"""A timm model folder: ``config.json`` + ``model.safetensors`` (+ ``README.md``), the layout
``timm.create_model("local-dir:PATH", pretrained=True)`` and the Hugging Face Hub (``hf-hub:USER/REPO``) read.

timm builds ``config["architecture"]`` (a registered name) with ``config["model_args"]`` as keyword overrides, so
any encoder size fits: the CPU presets' width-192, depth-6, patch-8 ViT at 64 px has no timm name and is built as
``vit_tiny_patch16_224`` with ``img_size=64, patch_size=8, depth=6``. ``pretrained_cfg`` carries what
``timm.data.resolve_data_config`` needs (input size, mean/std, crop) and ``num_classes: 0`` (features, no head).
``model.safetensors`` carries the same metadata as ``semmae export --format safetensors`` (the encoder record), so
:func:`semmae.models.encoder_loading.load_encoder` reads the folder as the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.models.encoder_record import STANDARD_SIZES, VIT_SIZES, EncoderRecord, parse_arch
from semmae.utils.io import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PAPER = "SemMAE: Semantic-Guided Masking for Learning Masked Autoencoders (Li et al., NeurIPS 2022)"
PAPER_ID = "arXiv:2206.10207"


def timm_architecture(record: EncoderRecord) -> str:
    """A name registered in timm to build ``record`` from: its own name when timm has it, else the standard ViT
    of the same width at patch 16 / 224 px (``vit_base_patch16_224`` for any other width); the config's
    ``model_args`` give the real shapes either way."""
    import timm

    name = record.timm_name()
    if timm.is_model(name):
        return name
    size = next((s for s in STANDARD_SIZES if VIT_SIZES[s][0] == record.embed_dim), "base")
    return f"vit_{size}_patch16_224"


def timm_config(
    record: EncoderRecord,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    license: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of ``record``'s encoder: plain data timm's ``local-dir:`` / ``hf-hub:`` loaders parse."""
    size = [record.in_chans, record.img_size, record.img_size]
    pretrained_cfg: dict[str, Any] = {
        "tag": "semmae",
        "custom_load": False,
        "input_size": size,
        "fixed_input_size": True,
        "interpolation": interpolation,
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "mean": list(mean),
        "std": list(std),
        "num_classes": 0,
        "pool_size": None,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "paper_name": PAPER,
        "paper_ids": PAPER_ID,
    }
    pretrained_cfg.update({k: v for k, v in (("license", license), ("description", description)) if v})
    return {
        "architecture": timm_architecture(record),
        "num_classes": 0,
        "num_features": record.embed_dim,
        "global_pool": record.global_pool,
        "model_args": record.arch(),
        "pretrained_cfg": pretrained_cfg,
        "semmae": {"encoder": record.to_dict(), "name": record.timm_name()},
    }


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


def write_timm_dir(
    out: str | Path, config: dict[str, Any], weights: bytes, card: str, overwrite: bool = False
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (``weights``: serialised safetensors) and ``README.md`` to
    ``out``, each atomically. An existing folder is refused unless it is an earlier export (a ``config.json`` with
    a ``semmae`` entry and nothing but the export's files or extras that the caller passes again), so a mistyped
    ``--out`` never mixes files into someone else's folder; an earlier export is replaced only with ``overwrite``,
    and never one inside a live run's folder (:mod:`semmae.utils.ownership`)."""
    from semmae.utils.io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder name for the timm folder")
    if out.is_dir() and any(out.iterdir()):
        ours = is_timm_dir(out) and "semmae" in _json_or_empty(out / CONFIG_NAME)
        if not ours:
            raise UserError(
                f"--out {out} is a folder that is not a semmae export; give a new or empty folder"
            )
        if not overwrite:
            raise UserError(f"--out {out} already holds a semmae export; pass --overwrite to replace it")
    from semmae.utils.rundir import live_lock_above

    live = live_lock_above(out if out.exists() else out.parent) if out.parent.exists() else None
    if live is not None:
        raise UserError(
            f"--out {out} lies inside {live}, the folder of a run that is still going; use another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from None
    atomic_write_bytes(out / WEIGHTS_NAME, weights)
    atomic_write_text(out / CARD_NAME, card)
    atomic_write_text(
        out / CONFIG_NAME, json.dumps(config, indent=2) + "\n"
    )  # last: it marks the folder done
    return out


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
