"""Operations on a timm ``VisionTransformer`` encoder that its own ``forward_features`` does not offer: tokens with
positions (optionally only the kept patches, or with masked patches replaced), the class token's attention in the
last block, and the pooled token features every evaluation reads.

* :func:`embed_tokens` - patch embedding + position embedding + prefix (class/register) tokens, from the model's
  public attributes (``patch_embed``, ``pos_embed``, ``cls_token``, ``reg_token``, ``no_embed_class``,
  ``dynamic_img_size``); timm has no public equivalent of its private ``_pos_embed``. ``keep_index`` feeds only
  the kept patches, each with its own position, as MAE pretraining does (paper Sec. 4.1, the kept quarter of a
  patch-8 SemMAE); ``mask`` replaces masked patch embeddings with a token (iBOT's ``masked_embed``).
* :func:`forward_tokens` - the blocks and the final norm on those tokens: with every patch, exactly timm's
  ``forward_features``.
* :func:`cls_attention` / :func:`tokens_and_cls_attention` - the last block's softmax attention of the class
  query over the patches (paper Eq. 1's part learning and the foreground of the kept-token evaluation). timm's
  fused attention does not return its weights, so the CLS row is recomputed from that block's ``qkv`` projection:
  one extra ``qkv`` matmul of the last block.
* :func:`encoder_tokens` / :func:`pool_tokens` / :func:`pooled_features` - class token and patch tokens, pooled
  for the frozen-feature probes.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from semmae.errors import UserError
from semmae.masking._checks import assert_on_device, may_read


def _positions(vit: VisionTransformer, grid: tuple[int, int]) -> Tensor | None:
    """The position table ``[1, (P +) L, D]`` for a ``grid`` of patches (resampled when a ``dynamic_img_size``
    model sees another size than it was built for), or None for a model without positions."""
    pos = vit.pos_embed
    built = tuple(vit.patch_embed.grid_size)
    if pos is None or tuple(grid) == built:
        return pos
    n_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    return resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(built), num_prefix_tokens=n_prefix)


def embed_tokens(
    vit: VisionTransformer,
    images: Tensor,
    *,
    keep_index: Tensor | None = None,
    mask: Tensor | None = None,
    mask_token: Tensor | None = None,
) -> Tensor:
    """The tokens that enter the first block: ``[B, P + K, D]`` (``P`` prefix tokens, class token first).

    Args:
        images: ``[B, C, H, W]``; sides that differ from the model's need ``dynamic_img_size``.
        keep_index: long ``[B, K]`` indices (row-major over the patch grid) of the patches to feed; each gets its
            own position before the subset is taken. None = every patch (``K = L``).
        mask: bool ``[B, L]`` (True = masked) - those patch embeddings are replaced by ``mask_token`` ``[1, 1, D]``
            before the positions are added.
    """
    x = vit.patch_embed(images)  # [B, L, D], or [B, h, w, D] for a dynamic_img_size model
    b, d = x.shape[0], x.shape[-1]
    grid = tuple(x.shape[1:3]) if x.ndim == 4 else tuple(vit.patch_embed.grid_size)
    if mask is not None:
        x = torch.where(mask.view(*x.shape[:-1], 1), mask_token.reshape(d).to(x.dtype), x)
    x = x.reshape(b, -1, d)
    pos = _positions(vit, grid)
    n_prefix = vit.num_prefix_tokens
    if pos is not None:
        x = x + (pos if vit.no_embed_class else pos[:, n_prefix:])
    if keep_index is not None:
        _check_keep_index(keep_index, b, x.shape[1])
        x = x.gather(1, keep_index[..., None].expand(-1, -1, d))
    prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    if prefix:
        p = torch.cat(prefix, dim=1)
        if pos is not None and not vit.no_embed_class:
            p = p + pos[:, :n_prefix]
        x = torch.cat([p, x], dim=1)
    return vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))


def _check_keep_index(keep_index: Tensor, batch: int, length: int) -> None:
    if keep_index.dim() != 2 or keep_index.shape[0] != batch:
        raise ValueError(f"keep_index must be [B, K] with B = {batch}, got {list(keep_index.shape)}")
    in_range = (keep_index >= 0) & (keep_index < length)
    if not may_read(keep_index):
        assert_on_device(in_range, f"keep_index must lie in 0..{length - 1}")
    elif not bool(in_range.all()):
        raise ValueError(f"keep_index must lie in 0..{length - 1}")


def forward_tokens(vit: VisionTransformer, images: Tensor, **embed: Tensor | None) -> Tensor:
    """Every token after the blocks and the final norm, ``[B, P + K, D]``; ``embed``: :func:`embed_tokens`'
    ``keep_index`` / ``mask`` / ``mask_token``. With every patch and no mask this is timm's ``forward_features``."""
    return vit.norm(vit.blocks(embed_tokens(vit, images, **embed)))


# ------------------------------------------------------------------------------------------- class attention
def cls_attention(block: nn.Module, x: Tensor) -> Tensor:
    """Softmax attention of the class token's query over all tokens in ``block``: x [B, T, D] -> [B, H, T]."""
    attn = block.attn
    if not hasattr(attn, "qkv"):
        raise UserError(
            f"cannot read attention weights from {type(attn).__name__}: it has no fused 'qkv' layer"
        )
    h = block.norm1(x)
    b, t, _ = h.shape
    qkv = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim)
    q = qkv[:, :1, 0].transpose(1, 2)  # [B, H, 1, d]: the CLS query only
    k = qkv[:, :, 1].transpose(1, 2)  # [B, H, T, d]
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]


def _require_class_token(vit: VisionTransformer, what: str) -> None:
    if vit.num_prefix_tokens < 1 or vit.cls_token is None:
        raise UserError(f"{what} needs an encoder with a class token; this ViT has none")


def tokens_and_cls_attention(
    vit: VisionTransformer, images: Tensor, feature_layer: int = 0, *, tokens: bool = True
) -> tuple[Tensor | None, Tensor]:
    """``(tokens [B, P + L, D] after the final norm, CLS attention [B, H, L] of the last block over the patches)``.

    ``feature_layer = -k`` takes the tokens from the output of the block k before the last (through the final
    norm); the attention always comes from the last block. ``tokens=False`` skips the last block's forward and
    returns ``(None, attention)``.
    """
    _require_class_token(vit, "the class-token attention")
    x = embed_tokens(vit, images)
    depth = len(vit.blocks)
    feats = None
    for i, blk in enumerate(vit.blocks[:-1]):
        x = blk(x)
        if tokens and i == depth - 1 + feature_layer:
            feats = vit.norm(x)
    last = vit.blocks[-1]
    attn = cls_attention(last, x)[..., vit.num_prefix_tokens :]
    if not tokens:
        return None, attn
    x = vit.norm(last(x))
    return (x if feats is None else feats), attn


def last_cls_attention(vit: VisionTransformer, images: Tensor) -> Tensor:
    """The last block's CLS attention over the patches, ``[B, H, L]`` (the last block itself is not run)."""
    return tokens_and_cls_attention(vit, images, tokens=False)[1]


# ----------------------------------------------------------------------------------------------- token features
def encoder_tokens(vit: VisionTransformer, images: Tensor) -> tuple[Tensor, Tensor]:
    """Run the encoder on images [B, C, H, W]; return (class token [B, D], patch tokens [B, L, D]).

    Both come after the final norm (``forward_features``); a global-pool model (norm replaced by ``fc_norm``)
    returns the un-normalised tokens, as timm does.
    """
    tokens = vit.forward_features(images)
    n_prefix = vit.num_prefix_tokens
    cls = tokens[:, 0] if n_prefix > 0 else tokens.mean(dim=1)
    return cls, tokens[:, n_prefix:]


def pool_tokens(vit: VisionTransformer, tokens: Tensor, pool: str = "token") -> Tensor:
    """Pooled features ``[B, D]`` of tokens ``[B, P + K, D]``: the class token (the token mean for a model
    without one) or the patch-token mean."""
    n_prefix = vit.num_prefix_tokens
    if pool == "token":
        return tokens[:, 0] if n_prefix > 0 else tokens.mean(dim=1)
    if pool == "avg":
        return tokens[:, n_prefix:].mean(dim=1)
    raise UserError(f"pool must be 'token' or 'avg', got {pool!r}")


def pooled_features(vit: VisionTransformer, images: Tensor, pool: str = "token") -> Tensor:
    """Frozen-feature view used by linear probing and kNN: the class token or the patch-token mean, [B, D]."""
    return pool_tokens(vit, vit.forward_features(images), pool)
