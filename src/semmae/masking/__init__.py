"""Semantic-guided masking (paper Sec. 3.2, Algorithm 1) and the baselines of Table 3 / Figure 1.

All masks are bool ``[B, L]`` with True = masked and exactly ``round(mask_ratio * L)`` masked patches per image.
"""

from semmae.masking.baselines import attention_mask, block_mask, random_mask
from semmae.masking.indices import foreground_keep_index, ids_to_mask, mask_to_ids
from semmae.masking.schedule import alpha_schedule
from semmae.masking.semantic import num_masked, semantic_guided_mask
from semmae.masking.strategies import MASKING_NAMES, MaskingStrategy, build_masking

__all__ = [
    "MASKING_NAMES",
    "MaskingStrategy",
    "alpha_schedule",
    "attention_mask",
    "block_mask",
    "build_masking",
    "foreground_keep_index",
    "ids_to_mask",
    "mask_to_ids",
    "num_masked",
    "random_mask",
    "semantic_guided_mask",
]
