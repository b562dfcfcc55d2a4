"""A direct, loop-based transcription of Algorithm 1's counts, to check the vectorised version against."""

from __future__ import annotations

import math


def reference_counts(
    sizes: list[int], ratio: float, alpha: float, part_order: list[int], tie: list[float]
) -> list[int]:
    """Counts per part for one image, following the paper line by line.

    ``part_order`` is the random order in which whole parts are taken; ``tie`` the random tie-break of the
    rounding step (larger fractional part first, then larger ``tie``).
    """
    length = sum(sizes)
    n_mask = int(round(ratio * length))
    num_mask1 = [ratio * s for s in sizes]
    num_mask2 = [0.0] * len(sizes)
    covered = 0
    for k in part_order:  # whole parts until ratio * L patches are covered, the last partly
        take = min(sizes[k], max(n_mask - covered, 0))
        num_mask2[k] = float(take)
        covered += sizes[k]
    target = [(1 - alpha) * a + alpha * b for a, b in zip(num_mask1, num_mask2)]
    counts = [min(math.floor(t), s) for t, s in zip(target, sizes)]
    deficit = n_mask - sum(counts)
    by_fraction = sorted(range(len(sizes)), key=lambda k: -(target[k] - counts[k] + 1e-4 * tie[k]))
    for k in by_fraction:
        if deficit <= 0:
            break
        if counts[k] < sizes[k]:
            counts[k] += 1
            deficit -= 1
    assert deficit == 0
    return counts
