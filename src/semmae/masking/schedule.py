"""The alpha schedule of semantic-guided masking (paper Sec. 3.2).

The paper raises alpha from 0 (intra-part masking: learn the patterns *inside* a part) to 1 (whole parts:
learn the *relations between* parts) as ``alpha = (epoch / total_epochs) ** gamma`` with ``gamma = 2``. Table 3
also reports the reversed schedule ("1 -> 0") and fixed alphas. The official release instead uses a cosine ramp,
``alpha = (1 - cos(pi * progress)) / 2``, available here as ``shape="cosine"``.

``alpha_max`` (issue 40) caps the adaptive schedules: ``alpha = alpha_max * ramp(progress)`` going up (the paper is
``alpha_max = 1``), and ``alpha = alpha_max * (1 - ramp(progress))`` going down, so the reversed schedule starts at
the same cap and ends at 0. The cap scales the whole curve rather than clipping it: alpha keeps rising until the
last step (``alpha_max * progress ** gamma``), it only ends lower. A fixed alpha is set directly and takes no cap.
"""

from __future__ import annotations

import math

__all__ = ["alpha_schedule", "check_alpha_max", "SCHEDULE_SHAPES", "SCHEDULE_DIRECTIONS"]

SCHEDULE_SHAPES = ("power", "cosine")
SCHEDULE_DIRECTIONS = ("up", "down")


def alpha_schedule(
    progress: float,
    gamma: float = 2.0,
    direction: str = "up",
    fixed: float | None = None,
    shape: str = "power",
    alpha_max: float = 1.0,
) -> float:
    """Alpha at a point of training.

    Args:
        progress: finished iterations / total iterations, in [0, 1] (values outside are clamped).
        gamma: exponent of the power ramp ``progress ** gamma`` (paper: 2).
        direction: ``"up"`` (0 -> 1, the paper) or ``"down"`` (1 -> 0, Table 3's reversed rows).
        fixed: if given, this constant alpha in [0, 1] is returned whatever the progress.
        shape: ``"power"`` (paper) or ``"cosine"`` (official release).
        alpha_max: the cap, in (0, 1]: ``alpha_max * ramp`` (up) or ``alpha_max * (1 - ramp)`` (down); 1 is the
            paper. Not with ``fixed``.

    Returns:
        alpha in [0, alpha_max].
    """
    check_alpha_max(alpha_max)
    if fixed is not None:
        if isinstance(fixed, bool) or not 0.0 <= float(fixed) <= 1.0:
            raise ValueError(f"fixed alpha must lie in [0, 1], got {fixed!r}")
        if alpha_max != 1.0:
            raise ValueError(
                f"alpha_max caps the adaptive schedules, not a fixed alpha; got alpha_max {alpha_max!r}"
            )
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
    value = ramp if direction == "up" else 1.0 - ramp
    return value if alpha_max == 1.0 else float(alpha_max) * value


def check_alpha_max(alpha_max: float) -> float:
    """``alpha_max`` as a float, refused (:class:`ValueError`) unless a number in (0, 1]."""
    if (
        isinstance(alpha_max, bool)
        or not isinstance(alpha_max, (int, float))
        or not math.isfinite(alpha_max)
        or not 0.0 < float(alpha_max) <= 1.0
    ):
        raise ValueError(f"alpha_max must be a number in (0, 1], got {alpha_max!r}")
    return float(alpha_max)
