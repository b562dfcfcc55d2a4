"""Encoder-decoder segmentor: ViT pyramid -> UPerNet (+ auxiliary FCN on the stride-16 level), and its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semmae.eval.segmentation.backbone import ViTPyramid
from semmae.eval.segmentation.heads import FCNHead, UPerHead

#: pyramid level the auxiliary head reads (stride 16, BEiT/MAE ``auxiliary_head.in_index=2``)
AUX_LEVEL = 2


class Segmentor(nn.Module):
    """``images [B, 3, H, W] -> {"logits": [B, K, H/4, W/4], "aux": [B, K, H/16, W/16] (when an aux head exists)}``."""

    def __init__(
        self,
        backbone: ViTPyramid,
        num_classes: int,
        head_channels: int,
        pool_scales: list[int],
        aux_channels: int = 256,
        aux: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        chans = backbone.out_channels
        self.decode_head = UPerHead(chans, head_channels, num_classes, pool_scales, dropout)
        self.aux_head = FCNHead(chans[AUX_LEVEL], aux_channels, num_classes, dropout) if aux else None

    @property
    def crop_size(self) -> int:
        return int(self.backbone.vit.patch_embed.img_size[0])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(images)
        out = {"logits": self.decode_head(feats)}
        if self.aux_head is not None and self.training:
            out["aux"] = self.aux_head(feats[AUX_LEVEL])
        return out

    # -- timm's layer-decay interface: encoder stem = group 0, block i = group i + 1, everything else = last group
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^backbone\.vit\.(?:cls_token|reg_token|pos_embed|patch_embed|norm_pre)",
            blocks=[(r"^backbone\.vit\.blocks\.(\d+)", None)],
        )

    def no_weight_decay(self) -> set[str]:
        return {"backbone.vit." + n for n in self.backbone.vit.no_weight_decay()}


def segmentation_loss(
    out: dict[str, torch.Tensor], labels: torch.Tensor, ignore_index: int, aux_weight: float
) -> dict[str, torch.Tensor]:
    """Pixel-wise cross-entropy (ignore index excluded) of the logits upsampled to the label size ``[B, H, W]``;
    the auxiliary head adds ``aux_weight`` times its own loss. Returns ``{"loss", "loss_decode", "loss_aux"}``."""

    def ce(logits: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)

    losses = {"loss_decode": ce(out["logits"])}
    total = losses["loss_decode"]
    if "aux" in out and aux_weight > 0:
        losses["loss_aux"] = ce(out["aux"])
        total = total + aux_weight * losses["loss_aux"]
    losses["loss"] = total
    return losses
