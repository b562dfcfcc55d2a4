"""The masked autoencoder (He et al. 2022) that semantic-guided masking feeds (paper Sec. 3.2 and 4.1).

The model never decides what is masked: ``forward(imgs, mask, keep_index)`` takes a mask computed outside
(:mod:`semmae.masking`), so every strategy of Table 3 trains the same network.

* Encoder: patch embedding, fixed 2D sin-cos positions, timm ``Block`` s (fused scaled-dot-product attention),
  run on the visible patches plus a class token. Its weights are named as timm's ``VisionTransformer``, so
  :meth:`MaskedAutoencoder.encoder_state_dict` loads into ``encoder_record().build()``.
* Decoder: a lighter transformer over visible tokens and mask tokens; predicts every patch's pixels.
* Loss: mean squared error on the *masked* patches only, against per-patch normalised pixels (``norm_pix_loss``).

Patch-8 setting (paper Sec. 4.1, ViT-B/8): the image is cut into 8x8 patches (a 28x28 grid at 224 px) and the
paper "removes 3/4 patches that are most likely to be the background". Here that is ``keep_index``: the indices of
the quarter of the grid with the highest foreground score (:func:`semmae.masking.foreground_keep_index`). Only
those patches are embedded, each with its true position from the full 28x28 table (as the official release does
with its 785-row table), the mask is applied among them, and the loss covers the masked ones among them. The
sequence is then as long as a patch-16 model's at the same image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from semmae.masking.indices import mask_to_ids
from semmae.models.encoder_record import EncoderRecord, encoder_state_dict
from semmae.models.mae_init import xavier_linears_unit_norms_, xavier_patch_projection_
from semmae.models.patches import normalize_patches, patchify
from semmae.models.pos_embed import sincos_2d_pos_embed

__all__ = ["MAEConfig", "MaskedAutoencoder"]


@dataclass
class MAEConfig:
    """Architecture of one MAE; registered names fix these, ``create_model`` overrides may change them."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = True

    def validate(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for dim, heads, label in (
            (self.embed_dim, self.num_heads, "embed_dim"),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim"),
        ):
            if dim % heads or dim % 4:
                raise ValueError(
                    f"{label} {dim} must be a multiple of 4 and of its number of heads ({heads})"
                )
        if min(self.depth, self.decoder_depth, self.patch_size, self.img_size) < 1:
            raise ValueError("depths, patch_size and img_size must be >= 1")


class MaskedAutoencoder(nn.Module):
    """MAE with a ViT encoder; see the module docstring."""

    def __init__(self, config: MAEConfig, name: str = "mae"):
        super().__init__()
        config.validate()
        self.config = config
        self.name = name
        c = config
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size = c.patch_size
        self.grid_size = (c.img_size // c.patch_size, c.img_size // c.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.norm_pix_loss = c.norm_pix_loss

        # encoder (timm VisionTransformer names)
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.register_buffer("pos_embed", sincos_2d_pos_embed(c.embed_dim, self.grid_size))  # fixed
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(c.depth)
        )
        self.norm = norm_layer(c.embed_dim)

        # decoder (facebookresearch/mae names)
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_2d_pos_embed(c.decoder_embed_dim, self.grid_size))
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = norm_layer(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_size**2 * c.in_chans)
        self._init_weights()

    # ------------------------------------------------------------------ init and interop
    def _init_weights(self) -> None:
        """MAE's init: patch projection like a Linear (xavier), tokens N(0, 0.02), Linear xavier, LayerNorm 1/0."""
        xavier_patch_projection_(self.patch_embed.proj)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        xavier_linears_unit_norms_(self)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """Encoder weights named as timm's ``VisionTransformer`` (they load into ``encoder_record().build()``)."""
        return encoder_state_dict(self.state_dict())[0]

    def encoder_record(self) -> EncoderRecord:
        """The encoder's :class:`~semmae.models.encoder_record.EncoderRecord` (timm ViT arguments, no head)."""
        return EncoderRecord.from_mae_config(self.config_dict())

    def config_dict(self) -> dict:
        """Plain-data architecture (for checkpoints): ``{"name": ..., **MAEConfig fields}``."""
        return {"name": self.name, **asdict(self.config)}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm-style parameter groups of the encoder (layer-wise learning-rate decay)."""
        return dict(
            stem=r"^cls_token|^pos_embed|^patch_embed",
            blocks=r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, imgs: Tensor, mask: Tensor, keep_index: Tensor | None) -> None:
        c = self.config
        if imgs.dim() != 4 or tuple(imgs.shape[1:]) != (c.in_chans, c.img_size, c.img_size):
            raise ValueError(
                f"imgs must be [B, {c.in_chans}, {c.img_size}, {c.img_size}], got {list(imgs.shape)}"
            )
        length = self.num_patches if keep_index is None else keep_index.shape[-1]
        if keep_index is not None and (
            keep_index.dim() != 2
            or keep_index.shape[0] != imgs.shape[0]
            or keep_index.dtype != torch.long
            or length > self.num_patches
        ):
            raise ValueError(
                f"keep_index must be long [B, L'] with L' <= {self.num_patches}, got "
                f"{keep_index.dtype} {list(keep_index.shape)}"
            )
        if mask.dtype != torch.bool or tuple(mask.shape) != (imgs.shape[0], length):
            raise ValueError(
                f"mask must be bool [B, L']=[{imgs.shape[0]}, {length}], got {mask.dtype} {list(mask.shape)}"
            )

    def _gather_tokens(self, x: Tensor, index: Tensor) -> Tensor:
        """``x[b, index[b]]``: ``[B, N, D]`` and ``[B, M]`` -> ``[B, M, D]``."""
        return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def _positions(self, table: Tensor, keep_index: Tensor | None, batch: int) -> Tensor:
        """Patch rows of a position table for the patches in the model: ``[1|B, L', D]``."""
        grid = table[:, 1:]
        return grid if keep_index is None else self._gather_tokens(grid.expand(batch, -1, -1), keep_index)

    def embed_patches(self, imgs: Tensor, keep_index: Tensor | None = None) -> Tensor:
        """Patch tokens with positions, ``[B, L', D]``; with ``keep_index`` only the kept patches are embedded."""
        if keep_index is None:
            x = self.patch_embed(imgs)
        else:
            b, ch, h, w = imgs.shape
            p = self.patch_size
            pixels = (
                imgs.reshape(b, ch, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, ch * p * p)
            )
            proj = self.patch_embed.proj  # the conv as a linear map on (c, p, q)-ordered pixels
            x = F.linear(self._gather_tokens(pixels, keep_index), proj.weight.flatten(1), proj.bias)
        return x + self._positions(self.pos_embed, keep_index, imgs.shape[0])

    def forward_encoder(self, tokens: Tensor, ids_keep: Tensor) -> Tensor:
        """Visible tokens ``[B, L', D]`` -> latent ``[B, 1 + L_keep, D]`` (class token first)."""
        x = self._gather_tokens(tokens, ids_keep)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(
        self, latent: Tensor, ids_restore: Tensor, keep_index: Tensor | None = None
    ) -> Tensor:
        """Latent ``[B, 1 + L_keep, D]`` -> pixel predictions ``[B, L', p*p*C]`` for every patch in the model."""
        x = self.decoder_embed(latent)
        b, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        patches = self._gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), ids_restore)  # unshuffle
        patches = patches + self._positions(self.decoder_pos_embed, keep_index, b)
        x = torch.cat([x[:, :1] + self.decoder_pos_embed[:, :1], patches], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def targets(self, imgs: Tensor, keep_index: Tensor | None = None) -> Tensor:
        """Regression targets ``[B, L', p*p*C]`` (norm-pix if configured)."""
        target = patchify(imgs, self.patch_size)
        if keep_index is not None:
            target = self._gather_tokens(target, keep_index)
        return normalize_patches(target) if self.norm_pix_loss else target

    def forward_loss(self, target: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error per patch, averaged over the masked patches only."""
        per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
        m = mask.to(per_patch.dtype)
        return (per_patch * m).sum() / m.sum().clamp_min(1.0)

    def forward(
        self, imgs: Tensor, mask: Tensor, keep_index: Tensor | None = None, num_masked: int | None = None
    ) -> dict[str, Tensor]:
        """One MAE pass.

        Args:
            imgs: ``[B, C, H, W]`` normalised images.
            mask: bool ``[B, L']``, True = masked, the same count in every row, over the patches in the model.
            keep_index: long ``[B, L']`` grid indices of the patches that enter the model (patch-8 setting);
                None = all ``L`` patches.
            num_masked: the masked count of every row (``round(ratio * L')``), when known: the pass then reads
                nothing back from the device (no host sync, no ``torch.compile`` graph break). None = read it
                from the mask.

        Returns:
            ``{"loss": scalar, "pred": [B, L', p*p*C], "mask": bool [B, L']}``.
        """
        self._check_inputs(imgs, mask, keep_index)
        ids_keep, ids_restore = mask_to_ids(mask, num_masked)
        latent = self.forward_encoder(self.embed_patches(imgs, keep_index), ids_keep)
        pred = self.forward_decoder(latent, ids_restore, keep_index)
        loss = self.forward_loss(self.targets(imgs, keep_index), pred, mask)
        return {"loss": loss, "pred": pred, "mask": mask}

    @torch.no_grad()
    def last_cls_attention(self, imgs: Tensor) -> Tensor:
        """The encoder's last-layer class-token attention over every patch, ``[B, H, L]`` (unmasked, all patches):
        the ``attention`` foreground of kept-token evaluation (:mod:`semmae.eval.kept_tokens`)."""
        from semmae.models.vit_ops import cls_attention

        x = self.embed_patches(imgs)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks[:-1]:
            x = blk(x)
        return cls_attention(self.blocks[-1], x)[..., 1:]

    def forward_encoder_features(
        self, imgs: Tensor, keep_index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Unmasked encoding: class token ``[B, D]`` and patch tokens ``[B, L', D]`` after the final norm; with
        ``keep_index`` ``[B, L']`` only those patches enter, at their own positions (the patch-8 setting)."""
        x = self.embed_patches(imgs, keep_index)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:]
