"""The kept-token set of a patch-8 SemMAE encoder (paper Sec. 4.1): which patches enter, the most-foreground
``fraction`` of the grid (:func:`semmae.masking.foreground_keep_index`), scored from part caches (``cache``) or the
encoder's own CLS attention (``attention``: :func:`semmae.models.foreground.encoder_foreground`).

Ties in the score at the cut are broken at random by noise that is a hash of the run seed, the image's index and
the patch (:func:`tie_noise`), so a result does not depend on batch size or the number of processes, and a whole
batch is picked in one set of tensor ops (no per-image generator, no host sync). Evaluations choose a set with
:func:`semmae.eval.kept_tokens.resolve_kept_tokens`; the online kNN of pretraining uses it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.masking import foreground_keep_index
from semmae.models.foreground import encoder_foreground
from semmae.models.vit_ops import forward_tokens
from semmae.utils.seed import mix_seed

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
