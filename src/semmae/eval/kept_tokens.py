"""Evaluating a patch-8 SemMAE encoder the way the paper does: on the kept quarter of its patches (Sec. 4.1).

"Although using a smaller patch size, our parameters and computational cost do not increase during pre-training
and linear probing as only 1/4 patches in each image are used. Specifically, we leverage the learned attention
maps to remove 3/4 patches that are most likely to be the background." Pretraining with ``--fg-keep 0.25`` feeds
the encoder only those patches, each with its own position embedding; the linear probe and kNN here do the same:
:func:`semmae.models.vit_ops.forward_tokens` with a ``keep_index`` is timm's ``forward_features`` on a subset of
the patch tokens, at their true positions, so an encoder is probed on the token set it was trained on.

Which patches: the most-foreground ``fraction`` of the grid (:func:`semmae.masking.foreground_keep_index`), with the
foreground score from one of two sources:

* ``cache``: part caches of the train and val folders (``semmae parts export``), the source pretraining used - the
  part encoder's CLS attention, carried through the evaluation crop as the pretraining crop carries it;
* ``attention``: the evaluated encoder's own last-layer CLS attention over all its patches (one extra gradient-free
  pass over every patch; for images that have no cache).

Fine-tuning keeps every patch (the paper's Limitations: "using a small patch size increases the computational cost
in the fine-tuning stage"). Ties in the score at the cut are broken at random by noise that is a hash of the run
seed, the image's index and the patch (:func:`tie_noise`), so a result does not depend on batch size or the number
of processes, and a whole batch is picked in one set of tensor ops (no per-image generator, no host sync).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.engine.sampler import mix_seed
from semmae.errors import UserError
from semmae.masking import foreground_keep_index
from semmae.models.vit_ops import forward_tokens, last_cls_attention, pool_tokens

TOKEN_CHOICES = ("auto", "all", "kept")
DEFAULT_KEEP_FRACTION = 0.25  # the paper's quarter


@torch.no_grad()
def encoder_foreground(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ``attention`` source: the encoder's last-layer CLS attention over its patches, head-averaged and min-max
    normalised per image (the same score ``parts export`` stores), float ``[B, L]``. ``model``: a timm
    ``VisionTransformer``, or a model that gives that attention itself (``last_cls_attention(images)`` ->
    ``[B, H, L]``: this project's MAE, scored during pretraining)."""
    from semmae.parts.inference import foreground_score

    if hasattr(model, "last_cls_attention"):
        attn = model.last_cls_attention(images)
    else:
        if model.num_prefix_tokens < 1 or model.cls_token is None:
            raise UserError(
                "the 'attention' foreground needs an encoder with a class token; give part caches instead"
            )
        attn = last_cls_attention(model, images)  # [B, H, L]
    grid = int(round(attn.shape[-1] ** 0.5))
    return foreground_score(attn, grid).flatten(1)


_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (xorshift-multiply rounds) on int64 values in ``[0, 2**32)``; the multipliers are
    below ``2**31`` so no product leaves int64."""
    for mult in (0x7FEB352D, 0x5BD1E995):
        x = ((x ^ (x >> 16)) * mult) & _M32
    return x ^ (x >> 15)


def tie_noise(seed: int, index: torch.Tensor, length: int) -> torch.Tensor:
    """Uniform float ``[B, L]`` in [0, 1) that depends only on ``(seed, index[b], patch)``: image ``index[b]`` gets
    the same row in any batch, on any device, with any number of processes."""
    key = _hash32((index.long() + (mix_seed(seed, 0x7E) & _M32)) & _M32)  # per image
    patch = torch.arange(length, device=index.device)
    return _hash32(key[:, None] ^ _hash32(patch)[None]).double().div(2**32).float()


@dataclass(frozen=True)
class KeptTokens:
    """How an evaluation picks the patches it feeds: the most-foreground ``fraction`` from ``source``."""

    fraction: float
    source: str  # "cache" | "attention"
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"tokens": "kept", "keep_fraction": self.fraction, "foreground": self.source}

    def keep_index(self, fg: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` indices of the kept patches of images ``index`` ``[B]``; each image's ties are broken by its
        own noise (:func:`tie_noise`), the same in any batch."""
        noise = tie_noise(self.seed, index.to(fg.device, non_blocking=True), fg.shape[1])
        return foreground_keep_index(fg.float(), self.fraction, noise=noise)

    def features(
        self, model: VisionTransformer, batch: dict[str, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        """Tokens ``[B, prefix + K, D]`` of a batch (``image``, ``index`` and, for ``cache``, ``fg`` [B, L])."""
        images = batch["image"].to(device, non_blocking=True)
        if self.source == "cache":
            if "fg" not in batch:
                raise UserError(
                    "kept-token evaluation from part caches got a batch without foreground scores"
                )
            fg = batch["fg"].to(device, non_blocking=True)
        else:
            fg = encoder_foreground(model, images)
        return forward_tokens(model, images, keep_index=self.keep_index(fg, batch["index"]))


def pooled_kept(
    model: VisionTransformer,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    pool: str,
    keep: KeptTokens,
) -> torch.Tensor:
    """The kept-token counterpart of :func:`semmae.models.vit_ops.pooled_features`: ``[B, D]``."""
    return pool_tokens(model, keep.features(model, batch, device), pool)


def resolve_kept_tokens(
    tokens: str,
    keep_fraction: float | None,
    has_caches: bool,
    pretrained_keep: float | None,
    seed: int,
) -> KeptTokens | None:
    """``--tokens``/``--keep-fraction``/part caches + what the checkpoint says -> a :class:`KeptTokens` or None (all).

    ``auto`` keeps tokens when the checkpoint was pretrained on a kept fraction below 1 (``pretrained_keep``: the
    encoder record's ``fg_keep``); the fraction defaults to that value (else the paper's quarter).
    """
    if tokens not in TOKEN_CHOICES:
        raise UserError(f"--tokens must be one of {', '.join(TOKEN_CHOICES)}, got {tokens!r}")
    if tokens == "all" or (tokens == "auto" and not (pretrained_keep and pretrained_keep < 1)):
        return None
    fraction = keep_fraction if keep_fraction is not None else (pretrained_keep or DEFAULT_KEEP_FRACTION)
    if fraction >= 1:
        return None
    return KeptTokens(float(fraction), "cache" if has_caches else "attention", seed)
