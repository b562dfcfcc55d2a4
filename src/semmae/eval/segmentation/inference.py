"""Sliding-window inference (mmseg ``slide`` mode): crops of the training size at a fixed stride, the last window
of each row/column aligned to the border, logits averaged where windows overlap; inputs smaller than the crop are
padded (the padding's logits are discarded)."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from semmae.engine.precision import Precision


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis: ``0, stride, ...``, the last one at ``max(size - crop, 0)``."""
    n = max(math.ceil((size - crop) / stride), 0) + 1
    return [min(i * stride, max(size - crop, 0)) for i in range(n)]


@torch.no_grad()
def slide_logits(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    crop: int,
    stride: int,
    precision: Precision | None = None,
) -> torch.Tensor:
    """``image [B, 3, H, W] -> logits [B, K, H, W]`` (float32) averaged over the sliding windows."""
    b, _, h, w = image.shape
    logits = image.new_zeros((b, num_classes, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    for y in window_starts(h, crop, stride):
        for x in window_starts(w, crop, stride):
            win = image[:, :, y : y + crop, x : x + crop]
            ch, cw = win.shape[-2:]
            win = F.pad(win, (0, crop - cw, 0, crop - ch))
            with precision.autocast() if precision is not None else nullcontext():
                out = model(win)["logits"]
            out = F.interpolate(out.float(), size=(crop, crop), mode="bilinear", align_corners=False)
            logits[:, :, y : y + ch, x : x + cw] += out[:, :, :ch, :cw]
            count[:, :, y : y + ch, x : x + cw] += 1
    return logits / count


@torch.no_grad()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    out_size: tuple[int, int],
    num_classes: int,
    crop: int,
    stride: int,
    precision: Precision | None = None,
) -> torch.Tensor:
    """``image [B, 3, h, w]`` at the test scale -> class map ``[B, H, W]`` at the label's ``out_size``."""
    logits = slide_logits(model, image, num_classes, crop, stride, precision)
    logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits.argmax(1)
