"""The part-learning head of SemMAE (paper Sec. 3.1, Eq. 1-4).

A frozen encoder gives the class token ``F_c`` [B, D] and patch tokens ``F`` [B, L, D]. This module learns

* **part tokens** (Eq. 1): ``F_p^i = F_c * sigmoid(W2_i tanh(W1_i F_c))`` for i = 1..N, computed for all parts at
  once with batched weights [N, ...] (one ``einsum`` per layer, no loop over parts);
* **part attention** (Eq. 2): ``M = softmax(F_p^T W_p^T W F)`` [B, N, L]; the paper does not name the softmax
  axis, so ``softmax_over`` picks it: ``"positions"`` (each part token's distribution over the L patches, queries
  over keys) or ``"parts"`` (each patch's distribution over the N parts);
* a **decoder** (Eq. 3-4) that reconstructs the image from the maps alone, styled by ``F_c``: the maps are blurred
  (so that a part must cover a region, not scattered patches), mixed by convolutions, then upsampled by
  StyleGAN-like blocks of ``upsample -> conv -> AdaIN(style = linear(F_c)) -> LeakyReLU`` to image resolution
  and mapped to RGB.

Because the image must be rebuilt through N maps plus one global style vector, the maps are pushed to carve the
image into regions that each have a consistent appearance - the semantic parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semmae.parts.config import SIMILARITIES, SOFTMAX_AXES


@dataclass
class PartHeadSpec:
    """Shape-defining hyper-parameters of :class:`PartModel` (stored in checkpoints)."""

    embed_dim: int
    grid_size: int
    img_size: int
    num_parts: int = 6
    token_hidden_dim: int = 0  # 0: the encoder's embed_dim
    proj_dim: int = 256
    softmax_over: str = "positions"
    scale_logits: bool = True
    similarity: str = "dot"
    temperature: float = 0.1  # of the cosine similarity (unused by "dot")
    blur_kernel: int = 7
    blur_sigma: float = 0.0  # 0: derived from the kernel size
    decoder_dim: int = 256
    decoder_min_dim: int = 32
    decoder_convs: int = 2


class PartTokens(nn.Module):
    """Eq. 1: N part tokens gated from the class token, ``F_p^i = F_c * sigmoid(W2_i tanh(W1_i F_c))``.

    Shapes: ``F_c`` [B, D] -> ``F_p`` [B, N, D]. ``W1`` [N, H, D], ``W2`` [N, D, H] (with biases).
    """

    def __init__(self, embed_dim: int, num_parts: int, hidden_dim: int = 0):
        super().__init__()
        hidden = hidden_dim or embed_dim
        self.w1 = nn.Parameter(torch.empty(num_parts, hidden, embed_dim))
        self.b1 = nn.Parameter(torch.zeros(num_parts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_parts, embed_dim, hidden))
        self.b2 = nn.Parameter(torch.zeros(num_parts, embed_dim))
        # the same fan-in init as nn.Linear, per part: different parts start from different gates
        for w in (self.w1, self.w2):
            bound = 1.0 / math.sqrt(w.shape[-1])
            nn.init.uniform_(w, -bound, bound)

    def forward(self, f_c: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.einsum("nhd,bd->bnh", self.w1, f_c) + self.b1)
        gate = torch.sigmoid(torch.einsum("ndh,bnh->bnd", self.w2, h) + self.b2)
        return f_c.unsqueeze(1) * gate


class PartAttention(nn.Module):
    """Eq. 2: ``M = softmax(F_p^T W_p^T W F)``: part tokens [B, N, D] against patch tokens [B, L, D] -> [B, N, L].

    ``softmax_over="positions"`` normalises each part's map over the L patches; ``"parts"`` normalises each patch
    over the N parts. ``similarity="dot"`` is the paper's bilinear form; ``scale_logits`` divides it by
    sqrt(proj_dim) (a constant that ``W`` could absorb; it sets the initial temperature, as in dot-product
    attention). ``similarity="cosine"`` L2-normalises both projections and divides by ``temperature``: the logits
    then span [-1/t, 1/t] from the first step whatever the token norms, so the maps start as a soft clustering of
    the patch tokens instead of near-uniform (see docs/parts.md, "Why parts collapse").
    """

    def __init__(
        self,
        embed_dim: int,
        proj_dim: int,
        softmax_over: str = "positions",
        scale_logits: bool = True,
        similarity: str = "dot",
        temperature: float = 0.1,
    ):
        super().__init__()
        if softmax_over not in SOFTMAX_AXES:
            raise ValueError(f"softmax_over must be one of {SOFTMAX_AXES}, got {softmax_over!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if similarity == "cosine" and not temperature > 0:
            raise ValueError(f"the cosine similarity needs a temperature > 0, got {temperature}")
        self.w_p = nn.Linear(embed_dim, proj_dim, bias=False)
        self.w = nn.Linear(embed_dim, proj_dim, bias=False)
        self.softmax_over = softmax_over
        self.similarity = similarity
        if similarity == "cosine":
            self.scale = 1.0 / temperature
        else:
            self.scale = proj_dim**-0.5 if scale_logits else 1.0

    def logits(self, f_p: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """``F_p^T W_p^T W F`` [B, N, L] (before the softmax)."""
        q, k = self.w_p(f_p), self.w(f)
        if self.similarity == "cosine":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return torch.einsum("bnk,blk->bnl", q, k) * self.scale

    def forward(self, f_p: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        dim = -1 if self.softmax_over == "positions" else 1
        return self.logits(f_p, f).softmax(dim=dim)


def gaussian_kernel1d(kernel_size: int, sigma: float = 0.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``kernel_size``; ``sigma <= 0`` uses OpenCV's rule for the size."""
    if sigma <= 0:
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class MapBlur(nn.Module):
    """Separable Gaussian blur of the part maps [B, N, h, w] with replicate padding (any grid size works).

    The kernel is a fixed buffer, not a parameter; ``kernel_size=1`` is the identity.
    """

    def __init__(self, kernel_size: int = 7, sigma: float = 0.0):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"blur kernel must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size
        self.register_buffer("kernel", gaussian_kernel1d(kernel_size, sigma), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:
            return maps
        b, n, h, w = maps.shape
        pad = self.kernel_size // 2
        x = maps.reshape(b * n, 1, h, w)
        k = self.kernel.to(maps.dtype)
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1))
        return x.reshape(b, n, h, w)


class AdaIN(nn.Module):
    """Eq. 3-4: ``AdaIN(x, F_c) = y_s * (x - mu(x)) / sigma(x) + y_b`` with ``(y_s, y_b) = A F_c + a``.

    ``x`` [B, C, H, W], ``F_c`` [B, D]. The scale is parametrised as ``1 + A_s F_c`` so that a fresh block starts
    as plain instance normalisation.
    """

    def __init__(self, channels: int, style_dim: int, eps: float = 1e-5):
        super().__init__()
        self.style = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)
        self.eps = eps

    def forward(self, x: torch.Tensor, f_c: torch.Tensor) -> torch.Tensor:
        y_s, y_b = self.style(f_c).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        mu = x.mean(dim=(2, 3), keepdim=True)
        sigma = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + self.eps).sqrt()
        return (1 + y_s) * (x - mu) / sigma + y_b


class StyleUpBlock(nn.Module):
    """One synthesis block: 2x bilinear upsample, 3x3 conv, AdaIN styled by ``F_c``, LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.adain = AdaIN(out_ch, style_dim)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, f_c: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.act(self.adain(self.conv(x), f_c))


class PartDecoder(nn.Module):
    """Maps [B, N, h, w] + ``F_c`` [B, D] -> image [B, 3, S, S] (Sec. 3.1, Eq. 3-4).

    blur -> ``decoder_convs`` styled 3x3 convs at grid resolution -> ceil(log2(S / h)) upsampling blocks (channels
    halve each time, not below ``decoder_min_dim``) -> bilinear resize to S if S / h is not a power of two -> 1x1
    conv to RGB.
    """

    def __init__(self, spec: PartHeadSpec):
        super().__init__()
        self.blur = MapBlur(spec.blur_kernel, spec.blur_sigma)
        self.img_size = spec.img_size
        ch = spec.decoder_dim
        self.stem = nn.ModuleList(
            StyleUpBlock(spec.num_parts if i == 0 else ch, ch, spec.embed_dim, upsample=False)
            for i in range(spec.decoder_convs)
        )
        n_up = max(0, math.ceil(math.log2(spec.img_size / spec.grid_size)))
        blocks = []
        in_ch = ch if spec.decoder_convs > 0 else spec.num_parts
        for _ in range(n_up):
            out_ch = max(spec.decoder_min_dim, in_ch // 2)
            blocks.append(StyleUpBlock(in_ch, out_ch, spec.embed_dim))
            in_ch = out_ch
        self.up = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(in_ch, 3, 1)

    def forward(self, maps: torch.Tensor, f_c: torch.Tensor) -> torch.Tensor:
        x = self.blur(maps)
        for blk in self.stem:
            x = blk(x, f_c)
        for blk in self.up:
            x = blk(x, f_c)
        if x.shape[-1] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return self.to_rgb(x)


class PartModel(nn.Module):
    """Part tokens (Eq. 1) + part attention (Eq. 2) + decoder (Eq. 3-4); the encoder stays outside.

    ``forward(f_c [B, D], f [B, L, D])`` returns ``{"maps": [B, N, L], "recon": [B, 3, S, S]}``;
    :meth:`part_maps` skips the decoder (what export needs).
    """

    def __init__(self, spec: PartHeadSpec):
        super().__init__()
        self.spec = spec
        self.tokens = PartTokens(spec.embed_dim, spec.num_parts, spec.token_hidden_dim)
        self.attention = PartAttention(
            spec.embed_dim,
            spec.proj_dim,
            spec.softmax_over,
            spec.scale_logits,
            spec.similarity,
            spec.temperature,
        )
        self.decoder = PartDecoder(spec)

    def part_maps(self, f_c: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Eq. 1-2: [B, N, L] part maps."""
        return self.attention(self.tokens(f_c), f)

    def forward(self, f_c: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.part_maps(f_c, f)
        g = self.spec.grid_size
        recon = self.decoder(maps.reshape(maps.shape[0], maps.shape[1], g, g), f_c)
        return {"maps": maps, "recon": recon}
