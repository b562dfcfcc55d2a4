"""The one checkpoint schema of every training stage: :class:`TrainState`, its key names, and :func:`upgrade`
(in ``models``, below ``engine``: the encoder loader reads pretrain checkpoints through it too).

A checkpoint file is a flat dict of plain data (every entry loads with ``torch.load(weights_only=True)``)::

    {"kind": "pretrain" | "bootstrap" | "parts" | "finetune" | "linprobe" | "segment",
     "schema_version": 1, "model": state dict of what trains, "encoder": EncoderRecord.to_dict() or None,
     "optimizer": ..., "scaler": ..., "step": optimiser steps done, "epoch": epochs finished,
     "config": the run's config as a dict, "rng": RNG state(s),
     "model_config": (step stages) the model's config, "sampler": (step stages) where the data order stands,
     ... the stage's own entries (:attr:`TrainState.extra`: ``step_in_epoch``, ``partial``, ``loader_rng``,
     ``rng_at_stop``, ``ema``, ``best``, ``student``, ``head``, ``frozen_encoder``, ``metrics``, ...)}

Every trainer writes one with :meth:`TrainState.to_dict` (``finetune``'s ``best.pth`` and ``segment train``'s
``seg_final.pth`` included: they are a TrainState without optimiser state); every reader in ``src/`` goes through
:meth:`TrainState.from_dict` (or :func:`read_train_state`), which first calls :func:`upgrade`: the one function
that turns each older layout this project wrote into the current one:

* no ``schema_version`` (everything before it): read as version 1, the keys were the same;
* ``"encoder": {"spec": <VisionTransformer args>, "layout", "random_init", ...}`` (``segment train`` before the
  one layout): the spec becomes the record, the rest ``encoder_source``;
* ``"encoder_spec": <VisionTransformer args>`` (``finetune``'s ``best.pth`` before the one layout): the record;
* no ``encoder`` record but a ``model_config`` with the encoder sizes (``pretrain`` / ``bootstrap`` before the
  ``encoder`` entry): the record derived from it, with ``config["fg_keep"]``;
* ``{"format": "semmae-parts", "version": 1, "encoder": FrozenEncoderSpec fields, ...}`` (``parts train``
  before the one layout): ``kind`` parts, the spec under ``frozen_encoder``, ``batches_rng`` as ``loader_rng``.

A part checkpoint's ``frozen_encoder`` entry (``FrozenEncoderSpec``: a checkpoint path or a ViT name, the image
size, the feature layer) stays a stage entry beside ``encoder``: it says how to rebuild the encoder, the record says
what it is (why it is not folded into the record: :class:`semmae.parts.encoder.FrozenEncoderSpec`).

The key names are defined here only (a test scans ``src/`` for them). External releases (official MAE / DINO /
iBOT ``.pth``, timm folders) are not checkpoints of this schema: :mod:`semmae.models.encoder_loading` reads them
with its own documented adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.models.encoder_record import EncoderRecord, record_of
from semmae.utils.io import load_checkpoint

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------- the key names
KIND = "kind"
VERSION = "schema_version"
MODEL = "model"
ENCODER = "encoder"
OPTIMIZER = "optimizer"
SCALER = "scaler"
STEP = "step"
EPOCH = "epoch"
CONFIG = "config"
RNG = "rng"
MODEL_CONFIG = "model_config"
SAMPLER = "sampler"
#: the keys :class:`TrainState` holds as fields (everything else is :attr:`TrainState.extra`)
FIELD_KEYS = (
    KIND,
    VERSION,
    MODEL,
    ENCODER,
    OPTIMIZER,
    SCALER,
    STEP,
    EPOCH,
    CONFIG,
    RNG,
    MODEL_CONFIG,
    SAMPLER,
)
#: the older layouts' keys :func:`upgrade` reads
OLD_ENCODER_SPEC = "encoder_spec"
ENCODER_SOURCE = "encoder_source"
PARTS_FORMAT = "semmae-parts"
PARTS_VERSION = 2

#: the stages that write training checkpoints (the ``kind`` entry)
KINDS = ("pretrain", "bootstrap", "parts", "finetune", "linprobe", "segment")
#: the step stages' checkpoints, also those written before the ``kind`` entry (they resume as they did)
REQUIRED_KEYS = (MODEL, MODEL_CONFIG, OPTIMIZER, SCALER, EPOCH, STEP, CONFIG, RNG, SAMPLER)
#: what every epoch stage's checkpoint holds
EPOCH_KEYS = (KIND, MODEL, OPTIMIZER, SCALER, STEP, EPOCH, "step_in_epoch", RNG, CONFIG)


@dataclass
class TrainState:
    """One checkpoint of a training stage, typed (see the module docstring for the file layout)."""

    kind: str | None = None
    model: dict[str, Any] | None = None
    encoder: EncoderRecord | None = None
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    step: int | None = None
    epoch: int | None = None
    config: dict[str, Any] | None = None
    rng: Any = None
    model_config: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The file's flat dict: the fields that are set (``encoder`` always: None says "no encoder"), then
        :attr:`extra`."""
        out: dict[str, Any] = {KIND: self.kind, VERSION: self.schema_version}
        out[ENCODER] = self.encoder.to_dict() if self.encoder is not None else None
        for key, value in (
            (MODEL, self.model),
            (OPTIMIZER, self.optimizer),
            (SCALER, self.scaler),
            (STEP, self.step),
            (EPOCH, self.epoch),
            (CONFIG, self.config),
            (RNG, self.rng),
            (MODEL_CONFIG, self.model_config),
            (SAMPLER, self.sampler),
        ):
            if value is not None:
                out[key] = value
        clash = sorted(set(self.extra) & set(FIELD_KEYS))
        if clash:
            raise ValueError(f"TrainState.extra holds schema key(s) {clash}")
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "checkpoint") -> TrainState:
        """A checkpoint dict of any layout this project wrote (:func:`upgrade`d first), typed."""
        data = upgrade(raw, source)
        version = data.get(VERSION, SCHEMA_VERSION)
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise UserError(
                f"{source}: checkpoint schema version {version!r} is not readable by this semmae "
                f"(reads 1..{SCHEMA_VERSION})"
            )
        enc = data.get(ENCODER)
        return cls(
            kind=data.get(KIND),
            model=data.get(MODEL),
            encoder=record_of(enc, None, source) if EncoderRecord.is_record(enc) else None,
            optimizer=data.get(OPTIMIZER),
            scaler=data.get(SCALER),
            step=data.get(STEP),
            epoch=data.get(EPOCH),
            config=data.get(CONFIG),
            rng=data.get(RNG),
            model_config=data.get(MODEL_CONFIG),
            sampler=data.get(SAMPLER),
            extra={k: v for k, v in data.items() if k not in FIELD_KEYS},
            schema_version=version,
        )


def is_step_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (a loaded file) is a ``pretrain`` / ``bootstrap`` checkpoint (what an encoder loads from):
    a ``model`` state dict beside a ``model_config``. Other files are read by their own adapters
    (:mod:`semmae.models.encoder_loading`: MAE / DINO / iBOT releases, timm state dicts)."""
    return (
        isinstance(obj, dict) and isinstance(obj.get(MODEL), dict) and isinstance(obj.get(MODEL_CONFIG), dict)
    )


def upgrade(raw: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """``raw`` (a checkpoint dict of any layout this project wrote) in the current layout; a new dict, ``raw``
    untouched. See the module docstring for the layouts read. Entries it does not know are kept as they are."""
    if not isinstance(raw, dict):
        raise UserError(f"{source} is not a semmae checkpoint (a {type(raw).__name__}, not a dict)")
    data = dict(raw)
    # parts train, version 1: the frozen encoder's spec under "encoder", no kind, no scaler
    if data.get("format") == PARTS_FORMAT and data.get(KIND) is None and "frozen_encoder" not in data:
        data.update(
            {
                KIND: "parts",
                "version": PARTS_VERSION,
                "frozen_encoder": data.pop(ENCODER, None),
                ENCODER: None,
                SCALER: data.get(SCALER, {}),
                "step_in_epoch": int(data.get("step_in_epoch") or 0),
                "loader_rng": data.get("batches_rng"),
            }
        )
    enc = data.get(ENCODER)
    if isinstance(enc, dict) and not EncoderRecord.is_record(enc) and isinstance(enc.get("spec"), dict):
        # segment train before the one layout: {"spec": VisionTransformer args, "layout", "random_init", ...}
        rest = {k: v for k, v in enc.items() if k != "spec"}
        data[ENCODER] = _as_record(enc["spec"], None, source)
        data.setdefault(ENCODER_SOURCE, rest)
    elif OLD_ENCODER_SPEC in data and not EncoderRecord.is_record(enc):
        # finetune's best.pth before the one layout
        data[ENCODER] = _as_record(data.pop(OLD_ENCODER_SPEC), None, source)
    if not EncoderRecord.is_record(data.get(ENCODER)) and isinstance(data.get(MODEL_CONFIG), dict):
        # pretrain / bootstrap before the encoder entry: the record of the model_config (+ the kept fraction)
        config = data.get(CONFIG)
        fg_keep = config.get("fg_keep") if isinstance(config, dict) else None
        fg_keep = float(fg_keep) if isinstance(fg_keep, (int, float)) else None
        record = record_of(dict(data[MODEL_CONFIG]), fg_keep, source)
        if record is not None:
            data[ENCODER] = record.to_dict()
    data.setdefault(VERSION, SCHEMA_VERSION)
    return data


def _as_record(spec: Any, fg_keep: float | None, source: str) -> dict[str, Any] | None:
    record = record_of(spec, fg_keep, source)
    return record.to_dict() if record is not None else None


def verb_of(kind: str) -> str:
    return {"parts": "parts train", "segment": "segment train"}.get(kind, kind)


def read_train_state(
    path_or_dict: str | Path | dict[str, Any], expect_kind: str | None = None, source: str | None = None
) -> TrainState:
    """The one reading of a checkpoint: a path (loaded ``weights_only``) or a dict already loaded, upgraded
    (:func:`upgrade`) and typed. ``expect_kind``: the stage that resumes from it; the file must be one of that
    stage's complete checkpoints (the step stages also take their files from before the ``kind`` entry)."""
    if isinstance(path_or_dict, dict):
        raw, where = path_or_dict, source or "checkpoint"
    else:
        raw, where = load_checkpoint(path_or_dict), source or str(path_or_dict)
    if not isinstance(raw, dict):
        raise UserError(f"checkpoint {where} is not a semmae training checkpoint")
    if expect_kind is None:  # upgraded once, by from_dict
        return TrainState.from_dict(raw, f"checkpoint {where}")
    data = upgrade(raw, f"checkpoint {where}")
    check_stage(data, expect_kind, where)
    return TrainState.from_dict(data, f"checkpoint {where}")


def check_stage(data: dict[str, Any], kind: str, where: str) -> None:
    """Refuse (UserError) an upgraded checkpoint dict that ``semmae <kind>`` cannot resume from."""
    written = data.get(KIND)
    step_stage = kind in ("pretrain", "bootstrap")
    if written is None and step_stage:
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise UserError(
                f"checkpoint {where} is not a semmae pretraining checkpoint (missing: {', '.join(missing)})"
            )
        return
    if written is None:
        raise UserError(
            f"{where} was written by an older semmae (before the one checkpoint layout: no 'kind' entry) and "
            f"`semmae {verb_of(kind)}` cannot continue it; use another --out or --overwrite"
        )
    if written != kind:
        raise UserError(
            f"{where} is not a `semmae {verb_of(kind)}` checkpoint (it was written by `semmae {verb_of(written)}`)"
        )
    required = REQUIRED_KEYS if step_stage else EPOCH_KEYS
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"checkpoint {where} is incomplete (missing: {', '.join(missing)})")


def check_pretrain(raw: Any, where: str) -> None:
    """Refuse (UserError) what is not a step stage's checkpoint (what ``semmae export`` reads)."""
    missing = [k for k in REQUIRED_KEYS if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise UserError(
            f"checkpoint {where} is not a semmae pretraining checkpoint (missing: {', '.join(missing)})"
        )
