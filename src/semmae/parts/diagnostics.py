"""Collapse diagnostics of part maps (paper Sec. 3.1): do the N maps of Eq. 2 really split an image into parts?

Everything is read off the argmax segmentation (what Algorithm 1 consumes) and the maps' confidence:

* ``share_<i>``: the fraction of all argmax cells in the batch that part i wins (pooled over images);
* ``parts_used``: exp of the entropy of one image's argmax shares, averaged over images - the effective number of
  parts an image's segmentation uses (1 = one part covers the image; N = all parts equally);
* ``parts_used_pooled``: the same for the pooled shares (do all part ids occur somewhere?);
* ``largest_share``: the largest part's share of an image, averaged over images;
* ``max_prob``: the mean over cells of the largest map value at that cell, after normalising each cell over
  the parts (1/N = the maps do not commit; 1 = one part owns every cell).

A run counts as **collapsed** when ``parts_used < N / 2``.
"""

from __future__ import annotations

import torch


def effective_count(shares: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the distributions along the last axis ([..., N] non-negative, rows summing to 1)."""
    p = shares.clamp_min(0)
    ent = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    return ent.exp()


def usage_from_ids(ids: torch.Tensor, num_labels: int) -> dict[str, float]:
    """``parts_used``, ``parts_used_pooled``, ``largest_share`` and ``share_<i>`` of label maps long [B, ...]
    with ids in ``0..num_labels-1`` (a learned segmentation or any baseline)."""
    ids = ids.reshape(ids.shape[0], -1)
    counts = torch.nn.functional.one_hot(ids, num_labels).sum(dim=1).float()  # [B, N]
    per_image = counts / counts.sum(-1, keepdim=True)
    pooled = counts.sum(0) / counts.sum()
    out = {
        "parts_used": float(effective_count(per_image).mean()),
        "parts_used_pooled": float(effective_count(pooled)),
        "largest_share": float(per_image.max(dim=-1).values.mean()),
    }
    out.update({f"share_{i}": float(pooled[i]) for i in range(num_labels)})
    return out


@torch.no_grad()
def part_usage(maps: torch.Tensor) -> dict[str, float]:
    """Diagnostics of part maps [B, N, L] (either softmax axis); see the module docstring for the keys."""
    maps = maps.detach().float()
    per_cell = maps / maps.sum(dim=1, keepdim=True).clamp_min(1e-12)
    out = usage_from_ids(maps.argmax(dim=1), maps.shape[1])
    out["max_prob"] = float(per_cell.max(dim=1).values.mean())
    return out


def is_collapsed(usage: dict[str, float], num_parts: int) -> bool:
    """True when an image's argmax uses fewer than N / 2 effective parts."""
    return usage["parts_used"] < num_parts / 2


def collapse_verdict(usage: dict[str, float], num_parts: int) -> str:
    """One line for the end of ``parts train``: collapsed or not, and what to try."""
    head = (
        f"parts used per image {usage['parts_used']:.2f} of {num_parts} "
        f"(largest part {usage['largest_share']:.0%} of an image, max prob {usage['max_prob']:.2f})"
    )
    if not is_collapsed(usage, num_parts):
        return f"parts: {head} - not collapsed"
    return (
        f"parts COLLAPSED: {head} < N/2; try more steps (--epochs), --similarity cosine with a lower "
        "--temperature, --softmax-over parts, or a more semantic encoder (semmae parts eval shows how the "
        "encoder's raw attention does)"
    )
