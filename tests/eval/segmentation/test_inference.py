"""Sliding-window inference equals a direct full-image pass for a translation-equivariant model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from semmae.eval.segmentation.inference import predict, slide_logits, window_starts


def test_window_starts():
    assert window_starts(512, 512, 341) == [0]
    assert window_starts(683, 512, 341) == [0, 171]
    assert window_starts(1000, 512, 341) == [0, 341, 488]
    assert window_starts(100, 512, 341) == [0]


class PointwiseModel(nn.Module):
    """``{"logits": 1x1 conv of the input}`` at full resolution, so windows can be checked exactly."""

    def __init__(self, k=4, crop=16):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)
        self.crop = crop

    def forward(self, x):
        assert x.shape[-2:] == (self.crop, self.crop)  # windows are always padded to the crop size
        return {"logits": self.conv(x)}


@pytest.mark.parametrize("h,w", [(16, 16), (37, 23), (10, 40)])
def test_slide_matches_full_pass(h, w):
    torch.manual_seed(0)
    model = PointwiseModel()
    x = torch.randn(2, 3, h, w)
    out = slide_logits(model, x, 4, crop=16, stride=11)
    assert out.shape == (2, 4, h, w)
    assert torch.allclose(out, model.conv(x), atol=1e-5)
    pred = predict(model, x, (h, w), 4, 16, 11)
    assert torch.equal(pred, model.conv(x).argmax(1))
