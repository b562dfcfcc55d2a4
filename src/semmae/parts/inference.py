"""Batched, augmentation-free part inference shared by ``parts export | show | eval``.

Geometry: an image is resized as a whole to the encoder's S x S input (no crop), so cell (r, c) of any G x G
output covers the same fraction of the original image - the geometry the part cache promises (the pretraining
transform crops image and part map together).

Foreground score per cell: the last layer's CLS attention over the patches, averaged over heads, resized
bilinearly to G x G and min-max normalised per image to [0, 1]. The class token of a self-supervised ViT attends
to the object (DINO, iBOT), so this ranks object cells above background ones; the patch-8 setting keeps the
most-foreground quarter of the cells. It comes from the encoder, not from the learned parts, because part ids
say nothing about which part is background (:mod:`semmae.models.foreground`).
"""

from __future__ import annotations

import contextlib

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import v2

from semmae.engine.precision import Precision
from semmae.models.foreground import foreground_score, to_grid
from semmae.parts.encoder import FrozenEncoder
from semmae.parts.model import PartModel


def full_image_transform(img_size: int) -> v2.Compose:
    """PIL image -> float [3, S, S], ImageNet-normalised, whole image resized (no crop, no augmentation)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((img_size, img_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )


def attention_parts(cls_attn: torch.Tensor, grid: int) -> torch.Tensor:
    """Raw-attention baseline (paper Fig. 4 / Table 4): argmax over the last layer's CLS-attention heads.

    [B, H, L] -> long [B, grid, grid]; the raw maps are compared as they are (not renormalised per head)."""
    return to_grid(cls_attn.float(), grid).argmax(dim=1)


@torch.no_grad()
def infer_parts(
    encoder: FrozenEncoder,
    model: PartModel,
    images: torch.Tensor,
    grid: int,
    precision: Precision | None = None,
) -> dict[str, torch.Tensor]:
    """Images [B, 3, S, S] -> ``{"part_ids": long [B, G, G], "probs": [B, N, G, G], "fg": [B, G, G],
    "attn_ids": long [B, G, G], "patches": [B, L, D]}`` (part maps resized to the cache grid, then argmax);
    ``precision``: the run's (:mod:`semmae.engine.precision`), fp32 when None."""
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        feats = encoder(images)
        maps = model.part_maps(feats["cls"], feats["patches"])
    probs = to_grid(maps.float(), grid)
    return {
        "part_ids": probs.argmax(dim=1),
        "probs": probs,
        "fg": foreground_score(feats["cls_attn"], grid),
        "attn_ids": attention_parts(feats["cls_attn"], grid),
        "patches": feats["patches"],
    }


@torch.no_grad()
def infer_attention_parts(
    encoder: FrozenEncoder, images: torch.Tensor, grid: int, precision: Precision | None = None
) -> dict[str, torch.Tensor]:
    """Raw-attention parts (paper Table 4's baseline) without a part model: images [B, 3, S, S] ->
    ``{"part_ids": long [B, G, G] (:func:`attention_parts`), "fg": [B, G, G] (:func:`foreground_score`)}``."""
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        cls_attn = encoder(images)["cls_attn"]
    return {"part_ids": attention_parts(cls_attn, grid), "fg": foreground_score(cls_attn, grid)}
