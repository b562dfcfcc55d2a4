"""``semmae export``: the pretrained encoder as a timm ``VisionTransformer``, where users look for it.

Two formats (``--format``; by default a ``--out`` ending in ``.safetensors`` is the file, anything else the folder):

* ``timm-dir`` - a folder with ``config.json`` (timm's: a registered architecture + ``model_args`` with the real
  sizes + ``pretrained_cfg`` with input size and mean/std, ``num_classes: 0``), ``model.safetensors`` and a
  ``README.md`` model card written from the run (:mod:`semmae.export.model_card`). It loads with
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` without semmae, or from the Hub after
  ``--push-to-hub USER/REPO`` as ``hf-hub:USER/REPO`` (the layout: :mod:`semmae.models.timm_dir`; written here,
  :func:`write_timm_dir`; pushed by :mod:`semmae.export.hub`).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from semmae.engine.checkpoint import load_pretrain_checkpoint
from semmae.errors import UserError
from semmae.export.hub import push_folder
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_record import encoder_state_dict, record_misfits
from semmae.models.timm_dir import CARD_NAME, CONFIG_NAME, PAPER, PAPER_ID, WEIGHTS_NAME
from semmae.utils.content_seal import safetensors_file_sealed, sealed_safetensors
from semmae.utils.io import atomic_write_bytes, atomic_write_text, checkpoint_file, load_checkpoint
from semmae.utils.ownership import (
    Owner,
    check_output_file,
    claim_output_folder,
    current_entries,
    end_output_folder,
    start_output_folder,
)

FORMATS = ("timm-dir", "safetensors")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".npz")


def _read(path: Path, ckpt: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], TrainState]:
    """(encoder weights, what the export writes about the encoder, the checkpoint) of ``ckpt`` loaded from
    ``path``: its encoder record is read once, checked against the weights, and passed on as plain data
    (:meth:`semmae.models.encoder_record.EncoderRecord.export_facts`)."""
    state = load_pretrain_checkpoint(path, ckpt)
    record = state.encoder
    if record is None:
        raise UserError(f"checkpoint {path} has a model_config without the encoder sizes")
    enc, _ = encoder_state_dict(state.model)
    misfit = record_misfits(record, enc)
    if misfit:
        raise UserError(f"checkpoint {path} does not match its model_config: {'; '.join(misfit)}")
    return enc, record.export_facts(), state


#: the ``written_by`` entry of an exported safetensors file's metadata (what lets ``--overwrite`` replace it)
WRITTEN_BY = "semmae export"


def is_semmae_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file ``semmae export`` wrote, as it wrote it: its metadata says so and
    its seal still holds for its weights (:mod:`semmae.utils.content_seal`; weights you fine-tuned and saved with
    the export's metadata are yours)."""
    meta = safetensors_file_sealed(path)
    return meta is not None and meta.get("written_by") == WRITTEN_BY


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
    owner = None
    if fmt == "safetensors":
        check_output_file(out, overwrite=overwrite, inputs=inputs, written_by_semmae=is_semmae_safetensors)
    else:
        owner = claim_export_folder(out, inputs, overwrite, adopt=_old_timm_export)
    enc, facts, state = _read(path, ckpt)
    card = None
    if fmt == "timm-dir":
        from semmae.export.model_card import encoder_card

        card = encoder_card(facts, state, path, enc, repo=push_to_hub)
    enc = {k: v.detach().contiguous().clone() for k, v in enc.items()}
    record = facts["record"]
    meta = {
        "format": "pt",
        "written_by": WRITTEN_BY,
        "model_config": json.dumps(record),
        "arch": facts["timm_name"],
    }
    if (
        record["fg_keep"] is not None
    ):  # patch-8 SemMAE: the evaluations feed the same kept fraction (kept_tokens.py)
        meta["fg_keep"] = str(record["fg_keep"])
    weights = sealed_safetensors(enc, metadata=meta)
    if card is None:
        atomic_write_bytes(out, weights)
        return out
    from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    config = timm_config(
        facts,
        IMAGENET_MEAN,
        IMAGENET_STD,
        license="other (weights follow the training data's terms; code MIT)",
        description=f"SemMAE-package encoder exported from {path.name}",
    )
    assert owner is not None
    start_output_folder(out, owner, TIMM_FILES)
    try:
        write_timm_dir(out, config, weights, card)
    finally:
        end_output_folder(out)
    if push_to_hub:
        push_folder(out, push_to_hub)
    return out


# ------------------------------------------------------------------------------------- the timm model folder
def timm_config(
    facts: dict[str, Any],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    license: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of an encoder (``facts``: its :meth:`EncoderRecord.export_facts`): plain data timm's
    ``local-dir:`` / ``hf-hub:`` loaders parse."""
    record = facts["record"]
    size = [record["in_chans"], record["img_size"], record["img_size"]]
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
        "architecture": facts["timm_architecture"],
        "num_classes": 0,
        "num_features": record["embed_dim"],
        "global_pool": record["global_pool"],
        "model_args": facts["model_args"],
        "pretrained_cfg": pretrained_cfg,
        "semmae": {"encoder": record, "name": facts["timm_name"]},
    }


#: what ``semmae export`` writes in a timm folder
TIMM_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: the owner marker of an export folder (:mod:`semmae.utils.ownership`)
EXPORT_KIND, EXPORT_VERB = "export", "export"


def claim_export_folder(
    out: Path, inputs: dict[str, str | None], overwrite: bool, adopt: Callable[[Path], bool]
) -> Owner:
    """The ownership check of an export folder (``--out`` of ``semmae export``), before anything is written: new or
    empty, or an earlier export (its owner marker; ``adopt`` recognises one from before markers) replaced only with
    ``--overwrite`` (:func:`semmae.utils.ownership.claim_output_folder`)."""
    return claim_output_folder(
        out,
        kind=EXPORT_KIND,
        verb=EXPORT_VERB,
        what="a semmae export",
        inputs=inputs,
        overwrite=overwrite,
        adopt=adopt,
    )


def _old_timm_export(out: Path) -> bool:
    """A timm folder ``semmae export`` wrote before owner markers: nothing but its plain files, and a
    ``config.json`` whose ``semmae`` entry holds the encoder record."""
    names = current_entries(out)
    if not names or not set(names) <= set(TIMM_FILES) or CONFIG_NAME not in names:
        return False
    if any((out / n).is_symlink() or not (out / n).is_file() for n in names):
        return False
    entry = _json_or_empty(out / CONFIG_NAME).get("semmae")
    return isinstance(entry, dict) and isinstance(entry.get("encoder"), dict)


def write_timm_dir(out: str | Path, config: dict[str, Any], weights: bytes, card: str) -> Path:
    """Write ``config.json``, ``model.safetensors`` (``weights``: serialised safetensors) and ``README.md`` to
    ``out``, each atomically. The caller has claimed the folder (:func:`claim_export_folder`; a part learner's
    ``encoder/`` lies inside the folder it claimed)."""
    out = Path(out)
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
