"""timm's RandAugment / AutoAugment made safe for Pillow >= 13 (MAE fine-tuning recipe, paper Table 3 / 5).

With magnitude noise (``rand-m9-mstd0.5``) timm's increasing posterize can ask to keep 0 bits. Pillow < 13 took
``posterize(img, 0)`` as "keep no bit" (a black image); Pillow 13 raises ``ValueError: bits must be between or
equal to 1 and 8``, which stopped fine-tuning at a random step. :func:`patch_posterize` gives the ops of a built
transform a posterize that keeps that meaning for 0 bits and leaves every other case to Pillow.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageOps


def posterize_keep_bits(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """``ImageOps.posterize`` for 1..7 bits; 8 or more -> the image; 0 or fewer -> every channel 0."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def patch_posterize(transform: Any) -> Any:
    """Walk a (timm) transform pipeline and give every posterize op :func:`posterize_keep_bits`; returns it."""
    for t in getattr(transform, "transforms", [transform]):
        for op in getattr(t, "ops", []):
            if getattr(getattr(op, "aug_fn", None), "__name__", "") == "posterize":
                op.aug_fn = posterize_keep_bits
        if hasattr(t, "policy"):  # AutoAugment: a list of sub-policies, each a list of ops
            for sub in t.policy:
                for op in sub:
                    if getattr(getattr(op, "aug_fn", None), "__name__", "") == "posterize":
                        op.aug_fn = posterize_keep_bits
    return transform
