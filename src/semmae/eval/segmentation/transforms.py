"""Joint image/label transforms for segmentation (mmseg's ADE20K pipeline, written with torchvision v2).

Training: random rescale (short side ``base * r``, long side capped at ``max_long * r``, ``r ~ U(lo, hi)``,
default 0.5-2.0), random crop (padded with 0 / the ignore index when the image is smaller), horizontal flip,
photometric jitter, ImageNet normalisation. The label is a ``tv_tensors.Mask``, so v2 resizes it with nearest
neighbour and leaves it out of the colour jitter. Evaluation: only the image is resized to the test scale; the
label stays at full resolution and the predictions are upsampled to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# mmseg PhotoMetricDistortion: brightness +-32/255, contrast and saturation x[0.5, 1.5], hue +-18 degrees
PHOTOMETRIC = dict(brightness=32 / 255, contrast=0.5, saturation=0.5, hue=18 / 360)


def rescale_size(h: int, w: int, short: float, long: float) -> tuple[int, int]:
    """Keep-ratio size with short side <= ``short`` and long side <= ``long`` (mmseg ``Resize(keep_ratio)``)."""
    s = min(short / min(h, w), long / max(h, w))
    return max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))


class RandomRescale(v2.Transform):
    """Rescale image and mask together by a random ratio of a base scale (``short x long`` bounding box)."""

    def __init__(self, base_short: int, max_long: int, ratio_range: tuple[float, float]):
        super().__init__()
        self.base_short, self.max_long = base_short, max_long
        self.ratio_range = ratio_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        lo, hi = self.ratio_range
        r = lo + (hi - lo) * float(torch.rand(()))
        return {"size": list(rescale_size(h, w, self.base_short * r, self.max_long * r))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.resize(inpt, params["size"], antialias=True)  # Mask -> nearest (v2 dispatch)


def _to_tv(image: Image.Image, label: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    return tv_tensors.Image(TF.pil_to_tensor(image)), tv_tensors.Mask(torch.from_numpy(label))


class TrainTransform:
    """``(PIL image, int64 label [H, W]) -> (float [3, crop, crop], long [crop, crop])``."""

    def __init__(
        self,
        crop_size: int,
        scale_base: int,
        max_long: int,
        scale_range: tuple[float, float],
        hflip: bool,
        photometric: bool,
        ignore_index: int,
    ):
        steps: list[Any] = [
            RandomRescale(scale_base, max_long, tuple(scale_range)),
            v2.RandomCrop(
                crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
            ),
        ]
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if photometric:
            steps.append(v2.ColorJitter(**PHOTOMETRIC))  # images only: masks pass through
        steps += [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Image.Image, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.pipeline(*_to_tv(image, label))
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


class EvalTransform:
    """``(PIL image, label [H, W]) -> (float [3, h, w] at the test scale, long [H, W] unchanged)``."""

    def __init__(self, short_side: int, max_long: int):
        self.short_side, self.max_long = short_side, max_long
        self.normalize = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __call__(self, image: Image.Image, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img = tv_tensors.Image(TF.pil_to_tensor(image))
        if self.short_side:
            h, w = img.shape[-2:]
            img = TF.resize(img, list(rescale_size(h, w, self.short_side, self.max_long)), antialias=True)
        return self.normalize(img).as_subclass(torch.Tensor), torch.from_numpy(label).long()


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[3, H, W]`` -> uint8 ``[3, H, W]`` for drawing."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
