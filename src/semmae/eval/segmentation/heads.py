"""UPerNet decode head (pyramid pooling + FPN fusion) and the auxiliary FCN head (Xiao et al. 2018, as used for
ADE20K in BEiT/MAE and paper Table 7). ConvNormAct = conv + BatchNorm + ReLU (mmcv's ConvModule)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PPM: ``[B, C, h, w] -> [B, C + len(scales) * ch, h, w]`` (average-pool to ``s x s`` bins, 1x1 conv,
    upsample back, concatenate with the input)."""

    def __init__(self, in_channels: int, channels: int, pool_scales: list[int]):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvNormAct(in_channels, channels, 1)) for s in pool_scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [_resize(stage(x), x.shape[-2:]) for stage in self.stages], dim=1)


class UPerHead(nn.Module):
    """``[level_i [B, C_i, H/s_i, W/s_i]] -> logits [B, K, H/s_0, W/s_0]``.

    The coarsest level goes through the PPM; lateral 1x1 convs + top-down addition build the FPN; every FPN level is
    refined by a 3x3 conv, upsampled to the finest level, concatenated and fused by a 3x3 conv before the classifier.
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        num_classes: int,
        pool_scales: list[int],
        dropout: float = 0.1,
    ):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.ppm_bottleneck = ConvNormAct(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.laterals = nn.ModuleList(ConvNormAct(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        lat.append(self.ppm_bottleneck(self.ppm(feats[-1])))
        for i in range(len(lat) - 1, 0, -1):  # top-down pathway
            lat[i - 1] = lat[i - 1] + _resize(lat[i], lat[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0]] + [_resize(o, size) for o in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))


class FCNHead(nn.Module):
    """Auxiliary head on one level: ``[B, C, h, w] -> [B, K, h, w]`` (3x3 ConvNormAct, dropout, 1x1 classifier)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvNormAct(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))
