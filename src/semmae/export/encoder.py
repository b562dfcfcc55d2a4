"""``semmae export``: the pretrained encoder as a timm ``VisionTransformer``, where users look for it.

Two formats (``--format``; by default a ``--out`` ending in ``.safetensors`` is the file, anything else the folder):

* ``timm-dir`` - a folder with ``config.json`` (timm's: a registered architecture + ``model_args`` with the real
  sizes + ``pretrained_cfg`` with input size and mean/std, ``num_classes: 0``), ``model.safetensors`` and a
  ``README.md`` model card written from the run (:mod:`semmae.export.model_card`). It loads with
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` without semmae, or from the Hub after
  ``--push-to-hub USER/REPO`` as ``hf-hub:USER/REPO`` (:mod:`semmae.models.timm_dir`).
* ``safetensors`` - the state dict alone, loadable with ``timm.create_model(NAME, pretrained=True, num_classes=0,
  pretrained_cfg_overlay=dict(file=FILE))`` when NAME is the right size.

The encoder keys are copied straight from the checkpoint's ``model`` state dict (wrapper prefixes stripped, the
MAE decoder and mask token dropped: :func:`semmae.models.encoder_record.encoder_state_dict`); the MAE's encoder
keys are timm's and a ``semmae bootstrap`` checkpoint's ``model`` is a timm ViT already. The checkpoint's encoder
record (:class:`semmae.models.encoder_record.EncoderRecord`) is stored as JSON in the weights' metadata
(``model_config``) for :mod:`semmae.models.encoder_loading`, next to ``arch`` (a name with the real size) and
``fg_keep``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from semmae.engine.checkpoint import load_pretrain_checkpoint
from semmae.errors import UserError
from semmae.export.hub import push_folder
from semmae.models.encoder_loading import checkpoint_record, record_misfits
from semmae.models.encoder_record import EncoderRecord, encoder_state_dict
from semmae.models.timm_dir import timm_config, write_timm_dir
from semmae.utils.io import atomic_write_bytes, checkpoint_file, load_checkpoint
from semmae.utils.ownership import check_output_file, check_replace_folder

FORMATS = ("timm-dir", "safetensors")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".npz")


def _read(path: Path, ckpt: Any) -> tuple[dict[str, torch.Tensor], EncoderRecord, dict[str, Any]]:
    """The encoder weights and record of the checkpoint ``ckpt`` loaded from ``path`` (read once, checked against
    each other)."""
    ckpt = load_pretrain_checkpoint(path, ckpt)
    record = checkpoint_record(ckpt, f"checkpoint {path}")
    if record is None:
        raise UserError(f"checkpoint {path} has a model_config without the encoder sizes")
    enc, _ = encoder_state_dict(ckpt["model"])
    misfit = record_misfits(record, enc)
    if misfit:
        raise UserError(f"checkpoint {path} does not match its model_config: {'; '.join(misfit)}")
    return {k: v.detach().contiguous().clone() for k, v in enc.items()}, record, ckpt


#: the ``written_by`` entry of an exported safetensors file's metadata (what lets ``--overwrite`` replace it)
WRITTEN_BY = "semmae export"


def is_semmae_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file ``semmae export`` wrote: its metadata says so (or, for files from
    before that entry, holds the encoder record and architecture semmae writes)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return False
    return meta.get("written_by") == WRITTEN_BY or ("model_config" in meta and "arch" in meta)


def resolve_format(out: str | Path, fmt: str | None) -> str:
    """``--format``, or (None) the one ``--out`` names: ``*.safetensors`` the file, anything else the folder."""
    out = Path(out)
    if fmt is None:
        if out.suffix in _FILE_SUFFIXES:
            raise UserError(
                f"--out {out}: name it *.safetensors for the single file, or give a folder (timm-dir, the default)"
            )
        return "safetensors" if out.suffix == ".safetensors" else "timm-dir"
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "safetensors" and out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the export is a safetensors file; name it *.safetensors")
    if fmt == "timm-dir" and out.suffix in (".safetensors", *_FILE_SUFFIXES):
        raise UserError(
            f"--out {out}: --format timm-dir writes a folder; give a folder name without {out.suffix}"
        )
    return fmt


def export_encoder(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str | None = None,
    push_to_hub: str | None = None,
    ckpt: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the encoder of ``checkpoint`` (a pretraining or bootstrap checkpoint file or run folder) to ``out`` in
    ``fmt`` (:data:`FORMATS`; None: from ``out``'s name) and, with ``push_to_hub`` (``USER/REPO``), upload the
    folder; returns the path written. With ``ckpt`` (its content, already loaded) ``checkpoint`` is the file it was
    loaded from, resolved by the caller (``semmae export``: :func:`semmae.export.cli.export_checkpoint`, which also
    takes a part checkpoint) and not resolved again. An existing ``out`` is replaced only with ``overwrite`` and
    only if semmae exported it (:mod:`semmae.utils.ownership`)."""
    from safetensors.torch import save

    if ckpt is None:
        path = checkpoint_file(checkpoint)
        ckpt = load_checkpoint(path)
    else:
        path = Path(checkpoint)
    fmt = resolve_format(out, fmt)
    if push_to_hub and fmt != "timm-dir":
        raise UserError("--push-to-hub uploads a timm folder; drop --format safetensors")
    out = Path(out)
    inputs = {"--checkpoint": str(path)}
    if fmt == "safetensors":
        check_output_file(out, overwrite=overwrite, inputs=inputs, written_by_semmae=is_semmae_safetensors)
    else:
        check_replace_folder(out, inputs)
    enc, record, ckpt = _read(path, ckpt)
    meta = {
        "format": "pt",
        "written_by": WRITTEN_BY,
        "model_config": json.dumps(record.to_dict()),
        "arch": record.timm_name(),
    }
    if (
        record.fg_keep is not None
    ):  # patch-8 SemMAE: the evaluations feed the same kept fraction (kept_tokens.py)
        meta["fg_keep"] = str(record.fg_keep)
    weights = save(enc, metadata=meta)
    if fmt == "safetensors":
        atomic_write_bytes(out, weights)
        return out
    from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from semmae.export.model_card import encoder_card

    config = timm_config(
        record,
        IMAGENET_MEAN,
        IMAGENET_STD,
        license="other (weights follow the training data's terms; code MIT)",
        description=f"SemMAE-package encoder exported from {path.name}",
    )
    num_params = sum(v.numel() for v in enc.values())
    card = encoder_card(record, ckpt, path, config["architecture"], num_params, repo=push_to_hub)
    write_timm_dir(out, config, weights, card, overwrite=overwrite)
    if push_to_hub:
        push_folder(out, push_to_hub)
    return out
