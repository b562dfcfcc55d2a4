"""The alpha schedule of semantic-guided masking (paper Sec. 3.2).

The paper raises alpha from 0 (intra-part masking: learn the patterns *inside* a part) to 1 (whole parts:
learn the *relations between* parts) as ``alpha = (epoch / total_epochs) ** gamma`` with ``gamma = 2``. Table 3
also reports the reversed schedule ("1 -> 0") and fixed alphas. The official release instead uses a cosine ramp,
``alpha = (1 - cos(pi * progress)) / 2``, available here as ``shape="cosine"``.
"""

from __future__ import annotations

import math

__all__ = ["alpha_schedule", "SCHEDULE_SHAPES", "SCHEDULE_DIRECTIONS"]

SCHEDULE_SHAPES = ("power", "cosine")
SCHEDULE_DIRECTIONS = ("up", "down")


def alpha_schedule(
    progress: float,
    gamma: float = 2.0,
    direction: str = "up",
    fixed: float | None = None,
    shape: str = "power",
) -> float:
    """Alpha at a point of training.

    Args:
        progress: finished iterations / total iterations, in [0, 1] (values outside are clamped).
        gamma: exponent of the power ramp ``progress ** gamma`` (paper: 2).
        direction: ``"up"`` (0 -> 1, the paper) or ``"down"`` (1 -> 0, Table 3's reversed rows).
        fixed: if given, this constant alpha in [0, 1] is returned whatever the progress.
        shape: ``"power"`` (paper) or ``"cosine"`` (official release).

    Returns:
        alpha in [0, 1].
    """
    if fixed is not None:
        if isinstance(fixed, bool) or not 0.0 <= float(fixed) <= 1.0:
            raise ValueError(f"fixed alpha must lie in [0, 1], got {fixed!r}")
        return float(fixed)
    if direction not in SCHEDULE_DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(SCHEDULE_DIRECTIONS)}, got {direction!r}")
    if shape not in SCHEDULE_SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SCHEDULE_SHAPES)}, got {shape!r}")
    if not math.isfinite(progress):
        raise ValueError(f"progress must be a finite number, got {progress!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    t = min(max(float(progress), 0.0), 1.0)
    ramp = t**gamma if shape == "power" else (1.0 - math.cos(math.pi * t)) / 2.0
    return ramp if direction == "up" else 1.0 - ramp
