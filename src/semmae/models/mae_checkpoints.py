"""Load pretraining checkpoints of the official MAE and SemMAE releases (and our own) into a MaskedAutoencoder.

Layouts understood:

* facebookresearch/mae pretraining: ``{"model": {cls_token, pos_embed [1, 1+L, D], patch_embed.proj.*, blocks.N.*,
  norm.*, decoder_embed.*, mask_token, decoder_pos_embed, decoder_blocks.N.*, decoder_norm.*, decoder_pred.*},
  "optimizer": ..., "epoch": ..., "args": argparse.Namespace}``.
* ucasligang/SemMAE patch-8 pretraining: the same keys with a 28x28+1 position table (785 rows) and 8x8 patch
  projection; it loads into ``mae_vit_base_patch8`` at 224 px, whose grid is that 28x28.
* A bare state dict, and keys prefixed by DDP (``module.``) or ``torch.compile`` (``_orig_mod.``).

Loading is strict: any missing or unexpected key or shape difference is refused with a message that lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from semmae.errors import UserError
from semmae.models.mae import MaskedAutoencoder
from semmae.utils.io import load_checkpoint

__all__ = ["load_mae_checkpoint", "extract_state_dict", "check_state_dict"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def extract_state_dict(ckpt: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The model's state dict inside a loaded checkpoint (``ckpt["model"]`` or the mapping itself)."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or not ckpt or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise UserError(
            f"{source} holds no model state dict (expected a 'model' entry or a mapping of tensors)"
        )
    state = {}
    for key, value in ckpt.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def check_state_dict(model: MaskedAutoencoder, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Raise UserError listing missing / unexpected keys and shape differences, if any."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return

    def short(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {short(unexpected)}")
    if shapes:
        parts.append(f"shape differences: {short(shapes)}")
    raise UserError(
        f"{source} does not fit model {model.name} "
        f"(img {model.config.img_size}, patch {model.patch_size}): " + "; ".join(parts)
    )


def load_mae_checkpoint(model: MaskedAutoencoder, path: str | Path) -> dict[str, Any]:
    """Load an MAE/SemMAE pretraining checkpoint into ``model`` (strict).

    Returns:
        Plain-data metadata: ``{"epoch": ..., "args": {...}}`` where present (the official releases pickle an
        ``argparse.Namespace``; it is returned as a dict).
    """
    ckpt = load_checkpoint(path, allow_namespace=True)
    state = extract_state_dict(ckpt, source=f"checkpoint {path}")
    check_state_dict(model, state, source=f"checkpoint {path}")
    model.load_state_dict(state, strict=True)
    meta: dict[str, Any] = {}
    if isinstance(ckpt, dict):
        if "epoch" in ckpt:
            meta["epoch"] = ckpt["epoch"]
        args = ckpt.get("args")
        if args is not None:
            meta["args"] = dict(vars(args)) if hasattr(args, "__dict__") else args
    return meta
