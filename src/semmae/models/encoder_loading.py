"""One loader from any supported checkpoint layout to a timm ``VisionTransformer`` encoder (paper Sec. 4 evaluates
the SemMAE encoder, and the MAE/iBOT/DINO baselines, with the same ViT).

:func:`load_encoder` returns a :class:`LoadedEncoder`: the model, its :class:`EncoderRecord` and what was loaded
(layout, dropped and fresh keys, a resampled position table). :func:`encoder_from_record` is the one way from a
record to a model - random init, or weights fitted in - which ``load_encoder`` and every rebuild (a segmentor
checkpoint's encoder, a random-init part encoder) go through.

Supported layouts (auto-detected; ``LoadedEncoder.layout`` says which one was found):

========================  ==========================================================================================
``semmae_pretrain``       this project's pretrain / bootstrap checkpoints (:mod:`semmae.models.checkpoint_schema`)
``safetensors``           this project's exports (timm keys; optional metadata ``model_config`` as JSON)
``timm_dir``              a timm model folder (``config.json`` + ``model.safetensors``: ``semmae export``'s default,
                          a Hugging Face Hub download); sizes from the weights' record, else ``config.json``
``mae_release``           official MAE / SemMAE releases: ``{"model": ..., "args": argparse.Namespace, ...}`` or
                          ``{"model": ...}``; the SemMAE patch-8 setting stores a 28x28+1 position table (224 px)
``timm``                  a plain timm / DINO-backbone state dict (``cls_token``, ``blocks.N.*``, ...)
``ibot``                  bytedance/ibot checkpoints: ``teacher``/``student`` with ``backbone.`` (and ``module.``)
                          prefixes and a ``masked_embed`` token, or the released ``{"state_dict": ...}``
``dino``                  facebookresearch/dino checkpoints: ``teacher``/``student``, ``backbone.``/``module.``
========================  ==========================================================================================

Encoders by name: the checkpoint may also be ``hf-hub:ORG/NAME`` (a timm model on the Hugging Face Hub, e.g.
``hf-hub:timm/vit_small_patch16_224.dino``; read as a ``timm_dir``) or an ``https://`` URL of a release file (e.g.
iBOT's ``checkpoint_teacher.pth``; optional ``#sha256=<hex>``). :func:`semmae.utils.io.checkpoint_file` downloads it
once into the Hub / torch hub cache (:mod:`semmae.utils.remote`) and the cached file is read here like any local
file, layout checks included. The known names are listed in docs/models.md.

Architecture: this project's checkpoints and exports carry an encoder record
(:class:`semmae.models.encoder_record.EncoderRecord`: the ``encoder`` entry of the checkpoint schema,
:mod:`semmae.models.checkpoint_schema`, which upgrades older files; an export's metadata) and are built from it.
Files without one (timm, iBOT, DINO, MAE releases: not checkpoints of that schema, read by this module's own
adapters, :func:`read_checkpoint`) have it inferred from their weights
(:meth:`EncoderRecord.from_state_dict`): embedding dim, patch size, input channels, depth, MLP ratio and qkv bias;
the number of heads (not visible in the weights) comes from an explicit ``num_heads``, the release's ``args.model``
/ ``arch`` name, or the standard ViT table (192->3, 384->6, 768->12, 1024->16, ...). The position table is
resampled (bicubic, timm's ``resample_abs_pos_embed``) when the evaluation resolution differs from the one the
checkpoint was trained at. Loading is strict: decoder, projection heads, the MAE/iBOT mask tokens and classifier
heads are dropped (listed in ``LoadedEncoder.dropped_keys``); anything else that does not fit raises
:class:`UserError` listing missing/unexpected keys and shape differences.

Pickled ``argparse.Namespace`` objects (MAE, SemMAE, DINO, iBOT releases) are accepted through
:func:`semmae.utils.io.load_checkpoint` with ``allow_namespace=True``: only that class is allow-listed, every
other object stays refused by ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState, is_step_checkpoint
from semmae.models.encoder_record import (
    EncoderRecord,
    encoder_prefix,
    encoder_state_dict,
    misfits,
    parse_arch,
    pos_grid,
    record_of,
)
from semmae.models.init_schemes import resolve_init_scheme
from semmae.models.mae_init import mae_init_
from semmae.models.timm_dir import WEIGHTS_NAME, config_sizes, is_timm_dir, read_timm_config
from semmae.utils.io import checkpoint_file, load_checkpoint
from semmae.utils.remote import remote_name

LAYOUTS = ("semmae_pretrain", "safetensors", "timm_dir", "mae_release", "timm", "ibot", "dino")


# ----------------------------------------------------------------------------------------------- layout detection
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _args_to_dict(args: Any) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, dict) else {}


def read_checkpoint(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """Open ``path`` and return ``(layout, raw state dict, hints)``.

    Hints: ``record`` (an :class:`EncoderRecord`, when the file carries one), ``config`` (a partial
    ``model_config`` of sizes), ``arch`` (a model name), ``fg_keep``, ``which`` (``teacher``/``student``).
    """
    path = checkpoint_file(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if is_timm_dir(path):
        return _read_timm_dir(path)
    obj = load_checkpoint(path, allow_namespace=True)
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of weights")
    hints: dict[str, Any] = {}
    if is_step_checkpoint(obj):  # ours (:mod:`semmae.models.checkpoint_schema`); the rest are foreign layouts
        state = TrainState.from_dict(obj, f"checkpoint {path}")
        hints = {"record": state.encoder} if state.encoder else {"config": state.model_config}
        return "semmae_pretrain", state.model, hints
    if "teacher" in obj or "student" in obj:
        which = "teacher" if _is_state_dict(obj.get("teacher")) else "student"
        sd = obj[which]
        if not _is_state_dict(sd):
            raise UserError(f"checkpoint {path} has a '{which}' entry that is not a state dict")
        layout = "ibot" if any(k.endswith("masked_embed") or "last_layer2" in k for k in sd) else "dino"
        args = _args_to_dict(obj.get("args"))
        if "arch" in args:
            hints["arch"] = str(args["arch"])
        hints["which"] = which
        return layout, sd, hints
    if _is_state_dict(obj.get("state_dict")):  # iBOT released checkpoint_teacher.pth
        sd = obj["state_dict"]
        layout = "ibot" if any(k.endswith("masked_embed") for k in sd) else "timm"
        return layout, sd, hints
    if _is_state_dict(obj.get("model")):
        args = _args_to_dict(obj.get("args"))
        if "model" in args:
            hints["arch"] = str(args["model"])
        return "mae_release", obj["model"], hints
    if _is_state_dict(obj):
        layout = "ibot" if f"{encoder_prefix(obj) or ''}masked_embed" in obj else "timm"
        return layout, obj, hints
    raise UserError(
        f"checkpoint {path} is not a known encoder layout (top-level keys: {', '.join(sorted(map(str, obj))[:12])}); "
        f"supported: {', '.join(LAYOUTS)}"
    )


def _read_safetensors(path: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        sd = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} cannot be read as safetensors: {e}") from None
    hints: dict[str, Any] = {}
    if "fg_keep" in meta:
        try:
            hints["fg_keep"] = float(meta["fg_keep"])
        except ValueError:
            raise UserError(f"checkpoint {path} has an fg_keep metadata entry that is not a number") from None
    if "model_config" in meta:  # the record (older exports: the MAE's model_config)
        try:
            config = json.loads(meta["model_config"])
        except json.JSONDecodeError:
            raise UserError(f"checkpoint {path} has a model_config metadata entry that is not JSON") from None
    else:
        keys = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
        config = {k: int(meta[k]) for k in keys if k in meta}
    record = record_of(config, hints.get("fg_keep"), f"checkpoint {path}")
    hints.update({"record": record} if record else {"config": config})
    if "arch" in meta:
        hints["arch"] = meta["arch"]
    return "safetensors", sd, hints


def _read_timm_dir(path: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    config = read_timm_config(path)
    files = [path / WEIGHTS_NAME] if (path / WEIGHTS_NAME).is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"timm model folder {path} has no {WEIGHTS_NAME}; re-export it with `semmae export`")
    _, sd, hints = _read_safetensors(files[0])
    if "record" not in hints:  # a timm folder from elsewhere: its config.json says the sizes
        hints["config"] = {**config_sizes(config), **hints.get("config", {})}
        hints["arch"] = str(config.get("architecture", hints.get("arch", "")))
    return "timm_dir", sd, hints


# ------------------------------------------------------------------------------------------- weights -> record
def _resolve_record(
    enc: dict[str, torch.Tensor],
    hints: dict[str, Any],
    arch: str | None,
    img_size: int | None,
    num_heads: int | None,
) -> tuple[EncoderRecord, dict[str, Any]]:
    """The checkpoint's record (or one inferred from the weights) with the caller's overrides applied."""
    grid = pos_grid(enc)
    record = hints.get("record")
    if record is None:
        named = arch
        if named is None and hints.get("arch"):  # a release's model name, when it is one we can read
            try:
                parse_arch(str(hints["arch"]))
                named = str(hints["arch"])
            except UserError:
                named = None
        record, source = EncoderRecord.from_state_dict(
            enc, num_heads=num_heads, img_size=img_size, arch=named, hints=hints.get("config")
        )
        record = record.replace(fg_keep=hints.get("fg_keep"))
    else:
        source = "record" if num_heads is None else "argument"
        record = record.replace(num_heads=num_heads, img_size=img_size)
    if arch is not None:  # an explicit arch must agree with the checkpoint
        named_sizes = parse_arch(arch)
        diffs = [
            f"{k}: arch {named_sizes[k]} vs weights {getattr(record, k)}"
            for k in ("embed_dim", "depth", "patch_size")
            if k in named_sizes and named_sizes[k] != getattr(record, k)
        ]
        if diffs:
            raise UserError(f"--arch {arch} does not match the checkpoint ({'; '.join(diffs)})")
    return record, {"num_heads_source": source, "checkpoint_grid": grid}


# ------------------------------------------------------------------------------------------------------ building
def _fit_state_dict(
    model: VisionTransformer, enc: dict[str, torch.Tensor], record: EncoderRecord, source: str
) -> tuple[dict[str, torch.Tensor], list[str], list[str], tuple[int, int] | None]:
    """Resample the position table, reconcile the final norm with the pooling; refuse anything else that differs.

    Returns (state dict to load, keys left at their fresh init, keys dropped, (old grid, new grid) or None).
    """
    enc = dict(enc)
    target = model.state_dict()
    fresh: list[str] = []
    dropped: list[str] = []
    resampled = None
    if record.global_pool == "avg" and "fc_norm.weight" not in enc:
        # MAE fine-tune recipe (global pool): the final norm is replaced by a freshly initialised fc_norm
        for k in ("norm.weight", "norm.bias"):
            if k in enc:
                dropped.append(k)
                enc.pop(k)
        fresh += [k for k in ("fc_norm.weight", "fc_norm.bias") if k in target]
    elif record.global_pool == "token" and "norm.weight" not in enc and "fc_norm.weight" in enc:
        # a global-pool fine-tuned checkpoint evaluated on the class token: its fc_norm is the final norm
        enc["norm.weight"], enc["norm.bias"] = enc.pop("fc_norm.weight"), enc.pop("fc_norm.bias")
    pos = enc.get("pos_embed")
    if pos is not None and "pos_embed" in target and pos.shape != target["pos_embed"].shape:
        n_prefix = model.num_prefix_tokens
        old = math.isqrt(int(pos.shape[1]) - n_prefix)
        new = model.patch_embed.grid_size
        if pos.shape[-1] == target["pos_embed"].shape[-1] and old * old == pos.shape[1] - n_prefix:
            enc["pos_embed"] = resample_abs_pos_embed(
                pos.float(), new_size=list(new), old_size=[old, old], num_prefix_tokens=n_prefix
            ).to(pos.dtype)
            resampled = (old, int(new[0]))
    parts = misfits(target, enc, fresh)
    if parts:
        if any(".ls1." in k or ".ls2." in k for k in enc if k not in target):
            parts.append("its blocks carry layer scale (ls1/ls2, as DINOv2 has), which these encoders do not")
        raise UserError(f"{source} does not fit a ViT encoder: {' | '.join(parts)}")
    return enc, fresh, dropped, resampled


def _random_init_record(
    arch: str | None, img_size: int | None, num_heads: int | None, global_pool: str | None, overrides: dict
) -> EncoderRecord:
    """The record of a random-init encoder without a checkpoint: ``arch`` and explicit sizes."""
    values: dict[str, Any] = {"img_size": 224, **(parse_arch(arch) if arch is not None else {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.update({k: v for k, v in (("img_size", img_size), ("num_heads", num_heads)) if v is not None})
    lacking = [k for k in EncoderRecord.REQUIRED_FIELDS if k not in values]
    if lacking:
        raise UserError(f"a random-init encoder needs --arch (or {', '.join(lacking)})")
    unknown = set(values) - set(EncoderRecord.ARCH_FIELDS)
    if unknown:
        raise UserError(f"unknown architecture option(s): {', '.join(sorted(unknown))}")
    return EncoderRecord(**values).replace(global_pool=global_pool)


@dataclass
class LoadedEncoder:
    """An encoder and how it was obtained (:func:`load_encoder`, :func:`encoder_from_record`)."""

    model: VisionTransformer  # timm ViT, ``num_classes=0``
    record: EncoderRecord  # its description (sizes, pooling, name, trainer, fg_keep)
    random_init: bool  # untrained: no weights were read
    init: str | None = None  # random init: the scheme (``mae`` / ``timm``, :mod:`semmae.models.init_schemes`)
    layout: str | None = None  # the checkpoint's layout (:data:`LAYOUTS`); None without a checkpoint
    checkpoint: str | None = None  # the file read (a run folder resolved to its checkpoint)
    which: str | None = None  # DINO / iBOT: ``teacher`` or ``student``
    num_heads_source: str = "record"  # where the heads came from (not in the weights): record, argument, ...
    checkpoint_grid: int | None = None  # side of the checkpoint's position grid
    # checkpoint keys left out on purpose (decoder, heads); model keys at their init (all of them for random init)
    dropped_keys: list[str] = field(default_factory=list)
    fresh_keys: list[str] = field(default_factory=list)
    pos_embed_resampled: tuple[int, int] | None = None  # (checkpoint grid, model grid) when resampled

    def summary(self) -> dict[str, Any]:
        """Plain data for a results file: layout, VisionTransformer arguments, resampling, heads source, init."""
        return {
            "layout": self.layout,
            "spec": self.record.arch(),
            "pos_embed_resampled": self.pos_embed_resampled,
            "num_heads_source": self.num_heads_source,
            "init": self.init,
        }


def encoder_from_record(
    record: EncoderRecord,
    weights: dict[str, torch.Tensor] | None = None,
    *,
    init: str = "timm",
    drop_path_rate: float = 0.0,
    dynamic_img_size: bool = False,
    source: str = "the weights",
) -> LoadedEncoder:
    """The one way from an encoder record to a model: a timm ``VisionTransformer`` built from ``record``, then
    either initialised (``weights=None``; ``init`` = ``timm``, timm's own, or ``mae``, MAE's) or loaded with
    ``weights`` (timm key names): the position table resampled to the record's grid, the final norm reconciled with
    the pooling, anything else that does not fit refused with a :class:`UserError` naming ``source``."""
    model = record.build(drop_path_rate, dynamic_img_size)
    if weights is None:
        if init not in ("mae", "timm"):
            raise ValueError(f"init must be 'mae' or 'timm' here (resolve 'auto' first), got {init!r}")
        if init == "mae":
            mae_init_(model)
        return LoadedEncoder(
            model, record, random_init=True, init=init, fresh_keys=sorted(model.state_dict())
        )
    enc, fresh, dropped, resampled = _fit_state_dict(model, weights, record, source)
    model.load_state_dict(enc, strict=False)  # strictness was checked above, with the fresh keys allowed
    return LoadedEncoder(
        model,
        record,
        random_init=False,
        dropped_keys=sorted(dropped),
        fresh_keys=sorted(fresh),
        pos_embed_resampled=resampled,
    )


def load_encoder(
    checkpoint: str | Path | None,
    arch: str | None = None,
    img_size: int | None = None,
    random_init: bool = False,
    *,
    num_heads: int | None = None,
    global_pool: str | None = None,
    drop_path_rate: float = 0.0,
    dynamic_img_size: bool = False,
    init: str = "auto",
    **arch_overrides: Any,
) -> LoadedEncoder:
    """Build a timm ``VisionTransformer`` (``num_classes=0``) and load an encoder checkpoint of any layout into it.

    Args:
        checkpoint: a ``.pth``/``.pt``/``.safetensors`` file or a timm model folder in one of :data:`LAYOUTS`, or a
            run folder (:func:`semmae.utils.io.checkpoint_file`), or a name (``hf-hub:ORG/NAME``, ``https://...``
            with optional ``#sha256=<hex>``; downloaded once into the cache), or None with
            ``random_init=True`` (then ``arch`` or ``arch_overrides`` give the architecture).
        arch: a name such as ``vit_base_patch16`` / ``mae_vit_large_patch16``; inferred from the weights when None.
            Given together with a checkpoint it must agree with the weights.
        img_size: evaluation resolution; the position table is resampled when it differs from the checkpoint's.
        random_init: return an untrained encoder of the same architecture (the baseline every table needs).
        num_heads: attention heads, when neither the checkpoint nor ``arch`` says (heads are not in the weights).
        global_pool: ``"token"`` (CLS after the final norm) or ``"avg"`` (patch-token mean + ``fc_norm``, the MAE
            fine-tune recipe); None keeps what the checkpoint implies.
        drop_path_rate: stochastic depth for fine-tuning.
        dynamic_img_size: let the model accept any input size (timm interpolates the table per call).
        init: with ``random_init``, how the untrained encoder is initialised (:mod:`semmae.models.init_schemes`):
            ``mae`` (xavier + fixed sin-cos positions, as MAE pretraining starts), ``timm`` (timm's default), or
            ``auto`` = ``mae`` for MAE-family checkpoints (this package's, official MAE/SemMAE), else ``timm``.
        arch_overrides: ``embed_dim``, ``depth``, ``patch_size``, ``mlp_ratio``, ``qkv_bias``, ``in_chans`` for a
            random-init encoder without a checkpoint.

    Returns:
        a :class:`LoadedEncoder` (model, record, layout, dropped/fresh keys, resampling, ...).
    """
    if global_pool not in (None, "token", "avg"):
        raise UserError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
    if checkpoint is None:
        if not random_init:
            raise UserError("give a checkpoint, or ask for a randomly initialised encoder (--random-init)")
        record = _random_init_record(arch, img_size, num_heads, global_pool, arch_overrides)
        built = encoder_from_record(
            record,
            init=resolve_init_scheme(init, None),
            drop_path_rate=drop_path_rate,
            dynamic_img_size=dynamic_img_size,
        )
        return dataclasses.replace(built, num_heads_source="argument")
    if arch_overrides:
        raise UserError(
            f"architecture option(s) {', '.join(sorted(arch_overrides))} only apply without a checkpoint"
        )
    name = remote_name(checkpoint)  # hf-hub:/https:// - named in messages next to its download
    checkpoint = checkpoint_file(checkpoint)  # a run folder: its last checkpoint; a name: the download
    layout, raw, hints = read_checkpoint(checkpoint)
    enc, dropped = encoder_state_dict(raw)
    record, notes = _resolve_record(enc, hints, arch, img_size, num_heads)
    record = record.replace(global_pool=global_pool)
    built = encoder_from_record(
        record,
        None if random_init else enc,
        init=resolve_init_scheme(init, layout),
        drop_path_rate=drop_path_rate,
        dynamic_img_size=dynamic_img_size,
        source=f"checkpoint {name} ({checkpoint})" if name else f"checkpoint {checkpoint}",
    )
    return dataclasses.replace(
        built,
        layout=layout,
        checkpoint=str(checkpoint),
        which=hints.get("which"),
        dropped_keys=built.dropped_keys if random_init else sorted(dropped + built.dropped_keys),
        **notes,
    )
