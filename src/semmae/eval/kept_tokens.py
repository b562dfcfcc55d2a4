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
The set and its tie-break live in :mod:`semmae.models.kept_tokens`, the score in
:mod:`semmae.models.foreground`; this module chooses the set an evaluation uses.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError
from semmae.models.kept_tokens import KeptTokens
from semmae.models.vit_ops import pool_tokens

TOKEN_CHOICES = ("auto", "all", "kept")
DEFAULT_KEEP_FRACTION = 0.25  # the paper's quarter


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
