"""Semantic-guided masking (paper Sec. 3.2, Algorithm 1) and the baselines of Table 3 / Figure 1.

All masks are bool ``[B, L]`` with True = masked and exactly ``round(mask_ratio * L)`` masked patches per image.
The names below load on first use (PEP 562): ``semmae masks show --help`` reads its config without torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "attention_mask": "baselines",
    "block_mask": "baselines",
    "random_mask": "baselines",
    "foreground_keep_index": "indices",
    "ids_to_mask": "indices",
    "mask_to_ids": "indices",
    "alpha_schedule": "schedule",
    "num_masked": "semantic",
    "semantic_guided_mask": "semantic",
    "MASKING_NAMES": "strategies",
    "MaskingStrategy": "strategies",
    "build_masking": "strategies",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    return value
