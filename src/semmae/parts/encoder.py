"""The frozen encoder of part learning (paper Sec. 3.1): a timm ``VisionTransformer`` that returns the class token
``F_c``, the patch tokens ``F`` and the last layer's CLS attention per head
(:func:`semmae.models.vit_ops.tokens_and_cls_attention`, which recomputes the CLS row of the last block's attention
from its ``qkv`` projection). The encoder is kept in eval mode with gradients off and never wrapped by DDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semmae.errors import UserError
from semmae.models.vit_ops import tokens_and_cls_attention


@dataclass(frozen=True)
class FrozenEncoderSpec:
    """How part learning gets its frozen encoder (stored in part checkpoints and cache metadata): a checkpoint path
    (whose architecture :func:`semmae.models.encoder_loading.load_encoder` reads) or a plain ViT name for a random
    encoder, the resolution and the feature layer.

    Not an encoder record (:mod:`semmae.models.encoder_record`; a part checkpoint carries that too, as ``encoder``):
    the spec exists before the encoder does (``parts train`` writes it from its options; the sizes of an
    ``--encoder-checkpoint`` are read off its weights only when it is built), ``checkpoint`` points at other weights
    while a record travels with its own (export metadata, ``config.json``), ``feature_layer`` is where the part head
    reads the ViT, not a property of the ViT, and ``arch`` is the option as given (with a checkpoint, the unused
    default). ``parts.json`` (``trained_with``) and part caches (``producer.encoder``) write these fields as they are.
    """

    arch: str = "vit_small_patch16_224"
    checkpoint: str | None = None
    img_size: int = 224
    feature_layer: int = 0  # 0: F_c and F from the last block; -k: from the block k before the last


class FrozenEncoder(nn.Module):
    """Wraps a timm ViT; ``forward(images [B, 3, S, S])`` returns a dict of

    * ``cls`` [B, D]: ``F_c``, the final-norm class token;
    * ``patches`` [B, L, D]: ``F``, the final-norm patch tokens (L = (S / patch)^2);
    * ``cls_attn`` [B, H, L]: softmax attention of the last block's CLS query over the patch keys, per head.

    ``feature_layer = -k`` takes ``F_c`` and ``F`` from the output of the block k before the last (through the
    final norm) instead of the last block: the late blocks of a briefly trained MAE specialise in pixels, and
    earlier tokens can hold the parts better (docs/parts.md). ``cls_attn`` always comes from the last block.
    """

    def __init__(self, vit: nn.Module, feature_layer: int = 0):
        super().__init__()
        for name in ("patch_embed", "pos_embed", "blocks", "norm"):
            if not hasattr(vit, name):
                raise UserError(f"encoder {type(vit).__name__} is not a timm VisionTransformer (no '{name}')")
        if getattr(vit, "num_prefix_tokens", 1) < 1 or getattr(vit, "cls_token", None) is None:
            raise UserError(
                "the part-learning encoder needs a class token (F_c, paper Eq. 1); this ViT has none"
            )
        depth = len(vit.blocks)
        if not -depth < feature_layer <= 0:
            raise UserError(
                f"--feature-layer must be in {-depth + 1}..0 for an encoder of {depth} blocks, got {feature_layer}"
            )
        self.feature_layer = feature_layer
        self.vit = vit.eval().requires_grad_(False)
        self.num_prefix = int(vit.num_prefix_tokens)
        self.embed_dim = int(vit.embed_dim)
        self.num_heads = int(vit.blocks[-1].attn.num_heads)
        gs = vit.patch_embed.grid_size
        if gs[0] != gs[1]:
            raise UserError(f"the encoder's patch grid must be square, got {tuple(gs)}")
        self.grid_size = int(gs[0])
        self.img_size = int(vit.patch_embed.img_size[0])
        self.patch_size = int(vit.patch_embed.patch_size[0])

    def describe(self) -> dict[str, int | str]:
        """The architecture actually in use (read off the modules, whatever name the config carried)."""
        vit = self.vit
        return {
            "patch_size": int(vit.patch_embed.patch_size[0]),
            "embed_dim": int(vit.embed_dim),
            "depth": len(vit.blocks),
            "num_heads": self.num_heads,
            "img_size": self.img_size,
        }

    def train(self, mode: bool = True) -> FrozenEncoder:  # the encoder is never put into train mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, cls_attn = tokens_and_cls_attention(self.vit, images, self.feature_layer)
        return {"cls": feats[:, 0], "patches": feats[:, self.num_prefix :], "cls_attn": cls_attn}


def build_encoder(spec: FrozenEncoderSpec, state_dict: dict | None = None) -> FrozenEncoder:
    """Build the frozen encoder: a checkpoint goes through :func:`semmae.models.encoder_loading.load_encoder` (every
    supported layout: iBOT, DINO, MAE, this project's MAE); without one, the plain ViT ``spec.arch`` names
    (:meth:`EncoderRecord.from_name`) with timm's random init, or with ``state_dict`` when a part checkpoint carried
    the random encoder it was trained on (:func:`semmae.models.encoder_loading.encoder_from_record`)."""
    from semmae.models.encoder_loading import encoder_from_record, load_encoder
    from semmae.models.encoder_record import EncoderRecord

    if spec.checkpoint:
        # the architecture is read from the weights; spec.arch only names the random-init model
        vit = load_encoder(spec.checkpoint, img_size=spec.img_size).model
    else:
        record = EncoderRecord.from_name(spec.arch, spec.img_size)
        vit = encoder_from_record(
            record, state_dict, init="timm", source="the part checkpoint's encoder"
        ).model
    return FrozenEncoder(vit, spec.feature_layer)
