"""A plain ViT as a 4-level feature pyramid (BEiT / MAE segmentation setup, paper Table 7).

The encoder's token maps after four blocks (blocks 4, 6, 8, 12 of a ViT-B, i.e. 0-based 3, 5, 7, 11; evenly spaced
at depth/3, depth/2, 2*depth/3, depth for other depths) all have stride ``p`` (the patch size). Each is resampled
to strides 4, 8, 16, 32: a factor ``p / s > 1`` by ``log2`` stride-2 transposed convolutions (BatchNorm + GELU
between them), a factor ``< 1`` by max pooling, factor 1 by identity. For ``p = 16`` that is BEiT's
``fpn1`` (2 deconvs), ``fpn2`` (1 deconv), ``fpn3`` (identity), ``fpn4`` (max-pool 2).
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from semmae.errors import UserError

#: output strides of the four pyramid levels (UPerNet's input)
PYRAMID_STRIDES = (4, 8, 16, 32)
#: where the four levels tap a ViT, as fractions of its depth (4/12, 6/12, 8/12, 12/12 for ViT-B)
TAP_FRACTIONS = (1 / 3, 1 / 2, 2 / 3, 1.0)


def default_out_indices(depth: int) -> list[int]:
    """0-based blocks feeding the pyramid: ``[3, 5, 7, 11]`` at depth 12, ``[7, 11, 15, 23]`` at depth 24."""
    return [max(1, round(depth * f)) - 1 for f in TAP_FRACTIONS]


def resampler(dim: int, factor: float) -> nn.Module:
    """Resample a ``[B, dim, h, w]`` map by ``factor`` (a power of two) keeping ``dim`` channels."""
    if factor == 1:
        return nn.Identity()
    if factor < 1:
        return nn.MaxPool2d(kernel_size=round(1 / factor), stride=round(1 / factor))
    layers: list[nn.Module] = []
    for i in range(round(math.log2(factor))):
        if i:
            layers += [nn.BatchNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class ViTPyramid(nn.Module):
    """``images [B, 3, H, W] -> [level_i [B, D, H / s_i, W / s_i] for s_i in (4, 8, 16, 32)]``.

    ``H`` and ``W`` must equal the encoder's ``img_size`` (the sliding-window crop). The encoder is pruned after its
    last tapped block, and its final norm and classifier (unused here) are removed. ``frozen=True`` fixes the
    encoder (no gradients, always in eval mode, so no drop path): only the resampling necks and the heads learn,
    which measures what the encoder's features already hold (a segmentation probe).
    """

    def __init__(self, vit: VisionTransformer, out_indices: list[int] | None = None, frozen: bool = False):
        super().__init__()
        depth = len(vit.blocks)
        self.out_indices = list(out_indices) if out_indices else default_out_indices(depth)
        if len(self.out_indices) != len(PYRAMID_STRIDES) or not all(0 <= i < depth for i in self.out_indices):
            raise UserError(
                f"out_indices {self.out_indices} must be {len(PYRAMID_STRIDES)} blocks in [0, {depth - 1}]"
            )
        patch = vit.patch_embed.patch_size[0]
        for s in PYRAMID_STRIDES:
            f = patch / s
            if not math.log2(f).is_integer():
                raise UserError(
                    f"patch size {patch} cannot be resampled to stride {s} with deconvs/pooling "
                    "(needs a power-of-two patch size)"
                )
        img = vit.patch_embed.img_size[0]
        if img % PYRAMID_STRIDES[-1]:
            raise UserError(
                f"crop size {img} must be a multiple of the coarsest pyramid stride {PYRAMID_STRIDES[-1]}"
            )
        self.taps = sorted(set(self.out_indices))
        vit.prune_intermediate_layers(self.taps, prune_norm=True, prune_head=True)
        self.vit = vit
        self.embed_dim = vit.embed_dim
        self.patch_size = patch
        self.necks = nn.ModuleList(resampler(self.embed_dim, patch / s) for s in PYRAMID_STRIDES)
        self.frozen = frozen
        if frozen:
            self.vit.requires_grad_(False)
            self.vit.eval()

    def train(self, mode: bool = True) -> ViTPyramid:
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim] * len(PYRAMID_STRIDES)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.vit.forward_intermediates(
                images, indices=self.taps, intermediates_only=True, stop_early=True, output_fmt="NCHW"
            )
        by_block = dict(zip(self.taps, maps))
        return [neck(by_block[i]) for neck, i in zip(self.necks, self.out_indices)]
