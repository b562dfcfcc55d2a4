"""Semantic-guided masking (paper Sec. 3.2, Algorithm 1) and the baselines of Table 3 / Figure 1, as a library.

Pure, batched functions: part ids or scores in, masks or index tensors out; a model only consumes indices. All
masks are bool ``[B, L]`` (L patches, row-major over the grid) with True = masked and exactly
``round(mask_ratio * L)`` masked patches per image.

* :func:`semantic_guided_mask` (part ids long ``[B, L]``, ratio, alpha float or ``[B]``) -> bool ``[B, L]``;
  :func:`alpha_schedule` (progress) -> alpha = progress ** gamma, the adaptive schedule.
* :func:`mask_to_ids` bool ``[B, L]`` -> MAE's ``(ids_keep [B, L_keep], ids_restore [B, L])``;
  :func:`ids_to_mask` back.
* :func:`foreground_keep_index` (fg float ``[B, L]``) -> kept indices long ``[B, L_sub]`` (the patch-8 setting).
* baselines: :func:`random_mask`, :func:`block_mask`, :func:`attention_mask` -> bool ``[B, L]``.
* :func:`build_masking` (a strategy name) -> a :class:`MaskingStrategy` callable, what ``semmae pretrain`` draws.

docs/masking_api.md plugs a semantic-guided mask into a plain MAE-style forward on a timm ViT in ~20 lines.

The names load on first use (PEP 562): ``semmae masks show --help`` reads its config without torch.
"""

from __future__ import annotations

from semmae.utils.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    globals(),
    baselines=("attention_mask", "block_mask", "random_mask"),
    indices=("foreground_keep_index", "ids_to_mask", "mask_to_ids"),
    schedule=("alpha_schedule",),
    semantic=("num_masked", "semantic_guided_mask"),
    strategies=("MASKING_NAMES", "MaskingStrategy", "build_masking"),
)
