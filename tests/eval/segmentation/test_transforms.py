"""Joint transforms keep image and label aligned; padding is ignored; eval keeps the label resolution."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from semmae.eval.segmentation.transforms import EvalTransform, TrainTransform, denormalize, rescale_size


def _striped(h=48, w=40):
    label = (np.arange(w)[None, :] // 8 % 4).repeat(h, 0).astype(np.int64)  # 4 vertical stripe classes
    image = Image.fromarray(np.repeat((label * 60).astype(np.uint8)[..., None], 3, -1))
    return image, label


def test_rescale_size_caps_short_and_long_side():
    assert rescale_size(100, 200, 50, 1000) == (50, 100)
    assert rescale_size(100, 1000, 512, 2048) == (205, 2048)


def test_train_transform_keeps_image_and_label_aligned():
    torch.manual_seed(0)
    t = TrainTransform(32, 40, 160, (0.5, 2.0), hflip=True, photometric=False, ignore_index=255)
    image, label = _striped()
    for _ in range(10):
        img, lbl = t(image, label)
        assert img.shape == (3, 32, 32) and lbl.shape == (32, 32) and lbl.dtype == torch.long
        gray = denormalize(img)[0].long()
        valid = lbl != 255
        # image intensity (label * 60) predicts the label away from stripe borders (bilinear vs nearest)
        agree = (torch.round(gray / 60.0).long() == lbl)[valid].float().mean()
        assert agree > 0.85


def test_padding_is_the_ignore_index():
    t = TrainTransform(32, 8, 160, (1.0, 1.0), hflip=False, photometric=True, ignore_index=255)
    image, label = _striped(16, 16)  # short side rescaled to 8 -> 8x8, padded to 32x32
    img, lbl = t(image, label)
    assert int((lbl != 255).sum()) == 64
    assert set(lbl[lbl != 255].unique().tolist()) <= {0, 1}


def test_eval_transform_resizes_only_the_image():
    image, label = _striped(48, 40)
    img, lbl = EvalTransform(24, 2048)(image, label)
    assert img.shape == (3, 29, 24) and lbl.shape == (48, 40)
    assert torch.equal(lbl, torch.from_numpy(label))
