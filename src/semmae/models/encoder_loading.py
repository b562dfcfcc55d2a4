"""One loader from any supported checkpoint layout to a timm ``VisionTransformer`` encoder (paper Sec. 4 evaluates
the SemMAE encoder, and the MAE/iBOT/DINO baselines, with the same ViT).

Supported layouts (auto-detected; ``info["layout"]`` says which one was found):

========================  ==========================================================================================
``semmae_pretrain``       this project's pretrain checkpoints: ``{"model": MAE state dict, "model_config": {...}}``
``safetensors``           this project's exports (timm keys; optional metadata ``model_config`` as JSON)
``mae_release``           official MAE / SemMAE releases: ``{"model": ..., "args": argparse.Namespace, ...}`` or
                          ``{"model": ...}``; the SemMAE patch-8 setting stores a 28x28+1 position table (224 px)
``timm``                  a plain timm / DINO-backbone state dict (``cls_token``, ``blocks.N.*``, ...)
``ibot``                  bytedance/ibot checkpoints: ``teacher``/``student`` with ``backbone.`` (and ``module.``)
                          prefixes and a ``masked_embed`` token, or the released ``{"state_dict": ...}``
``dino``                  facebookresearch/dino checkpoints: ``teacher``/``student``, ``backbone.``/``module.``
========================  ==========================================================================================

Architecture: embedding dim, patch size, input channels, depth, MLP ratio and qkv bias are read from the weights;
the number of heads (not visible in the weights) comes from ``model_config``, the release's ``args.model`` name,
the ``arch`` name, an explicit ``num_heads``, or the standard ViT table (192->3, 384->6, 768->12, 1024->16, ...).
The position table is resampled (bicubic, timm's ``resample_abs_pos_embed``) when the evaluation resolution
differs from the one the checkpoint was trained at. Loading is strict: decoder, projection heads, the MAE/iBOT
mask tokens and classifier heads are dropped (listed in ``info["dropped_keys"]``); anything else that does not fit
raises :class:`UserError` listing missing/unexpected keys and shape differences.

Pickled ``argparse.Namespace`` objects (MAE, SemMAE, DINO, iBOT releases) are accepted through
:func:`semmae.utils.io.load_checkpoint` with ``allow_namespace=True``: only that class is allow-listed, every
other object stays refused by ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.models.init_schemes import mae_init_, resolve_init_scheme
from semmae.utils.io import load_checkpoint

LAYOUTS = ("semmae_pretrain", "safetensors", "mae_release", "timm", "ibot", "dino")

# standard ViT sizes: name -> (embed_dim, depth, num_heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
    "giant": (1408, 40, 16),
}
HEADS_BY_DIM = {dim: heads for dim, _, heads in VIT_SIZES.values()}

# keys of a checkpoint that are not part of the encoder and are dropped on purpose
_DROP_PATTERNS = (
    r"^decoder[._]",  # MAE decoder (decoder_embed, decoder_blocks, decoder_pos_embed, ...)
    r"^mask_token$",  # MAE decoder mask token
    r"^masked_embed$",  # iBOT masked-patch token
    r"^head\.",  # classifier / DINO / iBOT projection heads
    r"^head_dist\.",
)
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.")


@dataclass
class EncoderSpec:
    """The timm ``VisionTransformer`` arguments of an encoder."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    in_chans: int = 3
    global_pool: str = "token"  # "token" (CLS after the final norm) or "avg" (mean of patch tokens + fc_norm)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


def parse_arch(arch: str) -> dict[str, int]:
    """Read size and patch from a name like ``vit_base_patch16_224``, ``mae_vit_large_patch16`` or ``base``."""
    out: dict[str, int] = {}
    name = arch.lower()
    for size, (dim, depth, heads) in VIT_SIZES.items():
        if re.search(rf"(^|_){size}(_|$)", name):
            out.update(embed_dim=dim, depth=depth, num_heads=heads)
            break
    m = re.search(r"patch(\d+)", name)
    if m:
        out["patch_size"] = int(m.group(1))
    m = re.search(r"_(\d{2,4})$", name)
    if m and "patch_size" in out:
        out["img_size"] = int(m.group(1))
    if not out:
        raise UserError(
            f"cannot read an architecture from {arch!r}: use a name like vit_base_patch16 "
            f"(sizes: {', '.join(VIT_SIZES)}) or pass embed_dim/depth/num_heads/patch_size"
        )
    return out


# ----------------------------------------------------------------------------------------------- layout detection
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _find_prefix(sd: dict[str, torch.Tensor]) -> str | None:
    """The prefix under which the encoder lives (``""``, ``backbone.``, ``module.backbone.``, ...), or None."""
    anchors = ("patch_embed.proj.weight", "cls_token")
    for key in sd:
        for anchor in anchors:
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                rest = prefix
                while rest:  # the prefix must be made of known wrapper names only
                    for p in _PREFIXES:
                        if rest.startswith(p):
                            rest = rest[len(p) :]
                            break
                    else:
                        break
                if not rest:
                    return prefix
    return None


def _args_to_dict(args: Any) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, dict) else {}


def read_checkpoint(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """Open ``path`` and return ``(layout, raw state dict, hints)``; hints may hold ``model_config`` / ``arch``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = load_checkpoint(path, allow_namespace=True)
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of weights")
    hints: dict[str, Any] = {}
    if isinstance(obj.get("model"), dict) and isinstance(obj.get("model_config"), dict):
        hints = {"model_config": obj["model_config"]}
        config = obj.get("config")
        if isinstance(config, dict) and isinstance(config.get("fg_keep"), (int, float)):
            hints["fg_keep"] = float(config["fg_keep"])  # pretrained on the kept fraction (patch-8 SemMAE)
        return "semmae_pretrain", obj["model"], hints
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
        prefix = _find_prefix(obj) or ""
        layout = "ibot" if f"{prefix}masked_embed" in obj else "timm"
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
    if "model_config" in meta:
        try:
            hints["model_config"] = json.loads(meta["model_config"])
        except json.JSONDecodeError:
            raise UserError(f"checkpoint {path} has a model_config metadata entry that is not JSON") from None
    else:
        cfg = {k: meta[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads") if k in meta}
        if cfg:
            hints["model_config"] = {k: int(v) for k, v in cfg.items()}
    if "arch" in meta:
        hints["arch"] = meta["arch"]
    if "fg_keep" in meta:
        try:
            hints["fg_keep"] = float(meta["fg_keep"])
        except ValueError:
            raise UserError(f"checkpoint {path} has an fg_keep metadata entry that is not a number") from None
    return "safetensors", sd, hints


# ---------------------------------------------------------------------------------------------- state dict → spec
def encoder_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes and drop non-encoder keys. Returns (encoder state dict, dropped key names)."""
    prefix = _find_prefix(sd)
    if prefix is None:
        raise UserError(
            "the checkpoint holds no ViT encoder (no 'patch_embed.proj.weight' / 'cls_token' key under a known "
            f"prefix); first keys: {', '.join(list(sd)[:8])}"
        )
    enc: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in sd.items():
        if not key.startswith(prefix):
            dropped.append(key)
            continue
        name = key[len(prefix) :]
        if any(re.match(p, name) for p in _DROP_PATTERNS):
            dropped.append(key)
            continue
        enc[name] = value
    return enc, dropped


def infer_spec(
    enc: dict[str, torch.Tensor],
    hints: dict[str, Any] | None = None,
    arch: str | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
) -> tuple[EncoderSpec, dict[str, Any]]:
    """Read the architecture from the weights (+ hints for what the weights do not show: heads, image size)."""
    hints = hints or {}
    w = enc.get("patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        raise UserError(
            "the checkpoint has no 4-D 'patch_embed.proj.weight'; only ViT encoders are supported"
        )
    embed_dim, in_chans, patch_size = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
    block_ids = {int(m.group(1)) for k in enc if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not block_ids:
        raise UserError("the checkpoint has no transformer blocks ('blocks.N.*' keys)")
    depth = max(block_ids) + 1
    fc1 = enc.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    qkv_bias = "blocks.0.attn.qkv.bias" in enc
    pos = enc.get("pos_embed")
    n_prefix = 1 if "cls_token" in enc else 0
    ckpt_grid = None
    if pos is not None:
        n = int(pos.shape[1]) - n_prefix
        g = math.isqrt(n)
        if g * g != n:
            raise UserError(
                f"position table of {pos.shape[1]} tokens is not a square grid (+{n_prefix} class token)"
            )
        ckpt_grid = g
    cfg = dict(hints.get("model_config") or {})
    named: dict[str, int] = {}
    arch_name = arch or hints.get("arch")
    if arch_name:
        try:
            named = parse_arch(str(arch_name))
        except UserError:
            if arch is not None:
                raise
    if arch is not None:  # an explicit arch must agree with the weights
        diffs = [
            f"{k}: arch {named[k]} vs weights {v}"
            for k, v in (("embed_dim", embed_dim), ("depth", depth), ("patch_size", patch_size))
            if k in named and named[k] != v
        ]
        if diffs:
            raise UserError(f"--arch {arch} does not match the checkpoint ({'; '.join(diffs)})")
    heads_source = "argument"
    if num_heads is None:
        for source, value in (("model_config", cfg.get("num_heads")), ("arch name", named.get("num_heads"))):
            if value is not None and (source != "arch name" or named.get("embed_dim") == embed_dim):
                num_heads, heads_source = int(value), source
                break
    if num_heads is None:
        num_heads = HEADS_BY_DIM.get(embed_dim, max(1, embed_dim // 64))
        heads_source = "default table"
    if embed_dim % num_heads:
        raise UserError(f"num_heads {num_heads} does not divide embed_dim {embed_dim}")
    if img_size is None:
        img_size = (
            int(cfg["img_size"]) if "img_size" in cfg else (ckpt_grid * patch_size if ckpt_grid else 224)
        )
    if img_size % patch_size:
        raise UserError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
    global_pool = "avg" if ("fc_norm.weight" in enc and "norm.weight" not in enc) else "token"
    spec = EncoderSpec(
        img_size=int(img_size),
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=int(num_heads),
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        in_chans=in_chans,
        global_pool=global_pool,
    )
    return spec, {"num_heads_source": heads_source, "checkpoint_grid": ckpt_grid}


# ------------------------------------------------------------------------------------------------------ building
def build_encoder(
    spec: EncoderSpec, drop_path_rate: float = 0.0, dynamic_img_size: bool = False
) -> VisionTransformer:
    """A timm ``VisionTransformer`` with ``num_classes=0`` (``forward`` returns pooled features [B, D])."""
    return VisionTransformer(
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        in_chans=spec.in_chans,
        num_classes=0,
        global_pool=spec.global_pool,
        fc_norm=spec.global_pool == "avg",
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        qkv_bias=spec.qkv_bias,
        drop_path_rate=drop_path_rate,
        dynamic_img_size=dynamic_img_size,
    )


def _fit_state_dict(
    model: VisionTransformer, enc: dict[str, torch.Tensor], spec: EncoderSpec, source: str
) -> tuple[dict[str, torch.Tensor], list[str], list[str], tuple[int, int] | None]:
    """Resample the position table, reconcile the final norm with the pooling; refuse anything else that differs.

    Returns (state dict to load, keys left at their fresh init, keys dropped, (old grid, new grid) or None).
    """
    enc = dict(enc)
    target = model.state_dict()
    fresh: list[str] = []
    dropped: list[str] = []
    resampled = None
    if spec.global_pool == "avg" and "fc_norm.weight" not in enc:
        # MAE fine-tune recipe (global pool): the final norm is replaced by a freshly initialised fc_norm
        for k in ("norm.weight", "norm.bias"):
            if k in enc:
                dropped.append(k)
                enc.pop(k)
        fresh += [k for k in ("fc_norm.weight", "fc_norm.bias") if k in target]
    elif spec.global_pool == "token" and "norm.weight" not in enc and "fc_norm.weight" in enc:
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
    missing = sorted(k for k in target if k not in enc and k not in fresh)
    unexpected = sorted(k for k in enc if k not in target)
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in enc.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys: {', '.join(unexpected[:20])}{' ...' if len(unexpected) > 20 else ''}"
            )
        if shapes:
            parts.append(f"shape differences: {'; '.join(shapes[:10])}")
        raise UserError(f"checkpoint {source} does not fit a ViT encoder: {' | '.join(parts)}")
    return enc, fresh, dropped, resampled


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
) -> tuple[VisionTransformer, dict[str, Any]]:
    """Build a timm ``VisionTransformer`` (``num_classes=0``) and load an encoder checkpoint of any layout into it.

    Args:
        checkpoint: a ``.pth``/``.pt``/``.safetensors`` file in one of :data:`LAYOUTS`, or None with
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
        ``(model, info)`` with info keys ``layout``, ``checkpoint``, ``spec`` (dict), ``random_init``,
        ``dropped_keys``, ``fresh_keys``, ``pos_embed_resampled`` ((old grid, new grid) or None), ``num_heads_source``.
    """
    if global_pool not in (None, "token", "avg"):
        raise UserError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
    if checkpoint is None:
        if not random_init:
            raise UserError("give a checkpoint, or ask for a randomly initialised encoder (--random-init)")
        values: dict[str, Any] = {"img_size": 224, "mlp_ratio": 4.0, "qkv_bias": True, "in_chans": 3}
        if arch is not None:
            values.update(parse_arch(arch))
        values.update({k: v for k, v in arch_overrides.items() if v is not None})
        if img_size is not None:
            values["img_size"] = img_size
        if num_heads is not None:
            values["num_heads"] = num_heads
        lacking = [k for k in ("embed_dim", "depth", "num_heads", "patch_size") if k not in values]
        if lacking:
            raise UserError(f"a random-init encoder needs --arch (or {', '.join(lacking)})")
        unknown = set(values) - set(EncoderSpec.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown architecture option(s): {', '.join(sorted(unknown))}")
        spec = EncoderSpec(**values, global_pool=global_pool or "token")
        model = build_encoder(spec, drop_path_rate, dynamic_img_size)
        scheme = resolve_init_scheme(init, None)
        if scheme == "mae":
            mae_init_(model)
        info = dict(
            init=scheme,
            layout=None,
            checkpoint=None,
            spec=asdict(spec),
            random_init=True,
            dropped_keys=[],
            fresh_keys=sorted(model.state_dict()),
            pos_embed_resampled=None,
            num_heads_source="argument",
        )
        return model, info

    if arch_overrides:
        raise UserError(
            f"architecture option(s) {', '.join(sorted(arch_overrides))} only apply without a checkpoint"
        )
    layout, raw, hints = read_checkpoint(checkpoint)
    enc, dropped = encoder_state_dict(raw)
    spec, notes = infer_spec(enc, hints, arch=arch, img_size=img_size, num_heads=num_heads)
    if global_pool is not None:
        spec.global_pool = global_pool
    model = build_encoder(spec, drop_path_rate, dynamic_img_size)
    info: dict[str, Any] = dict(
        layout=layout,
        checkpoint=str(checkpoint),
        random_init=bool(random_init),
        fg_keep=hints.get("fg_keep"),
        **notes,
    )
    if random_init:
        scheme = resolve_init_scheme(init, layout)
        if scheme == "mae":
            mae_init_(model)
        info.update(
            init=scheme,
            spec=asdict(spec),
            dropped_keys=[],
            fresh_keys=sorted(model.state_dict()),
            pos_embed_resampled=None,
        )
        return model, info
    enc, fresh, dropped2, resampled = _fit_state_dict(model, enc, spec, str(checkpoint))
    model.load_state_dict(enc, strict=False)  # strictness was checked above, with the fresh keys allowed
    info.update(
        spec=asdict(spec),
        dropped_keys=sorted(dropped + dropped2),
        fresh_keys=sorted(fresh),
        pos_embed_resampled=resampled,
    )
    if "which" in hints:
        info["which"] = hints["which"]
    return model, info


# ------------------------------------------------------------------------------------------------------ features
def encoder_tokens(model: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the encoder on images [B, C, H, W]; return (class token [B, D], patch tokens [B, L, D]).

    Both come after the final norm (``forward_features``); a global-pool model (norm replaced by ``fc_norm``)
    returns the un-normalised tokens, as timm does.
    """
    tokens = model.forward_features(images)
    n_prefix = model.num_prefix_tokens
    cls = tokens[:, 0] if n_prefix > 0 else tokens.mean(dim=1)
    return cls, tokens[:, n_prefix:]


def pooled_features(model: VisionTransformer, images: torch.Tensor, pool: str = "token") -> torch.Tensor:
    """Frozen-feature view used by linear probing and kNN: the class token or the patch-token mean, [B, D]."""
    cls, patches = encoder_tokens(model, images)
    if pool == "token":
        return cls
    if pool == "avg":
        return patches.mean(dim=1)
    raise UserError(f"pool must be 'token' or 'avg', got {pool!r}")
