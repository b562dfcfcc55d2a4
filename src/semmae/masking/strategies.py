"""Masking strategies behind one interface, chosen by name in the config (paper Table 3 / Figure 1).

``build_masking(name, ...)`` returns a callable ``strategy(batch_size, grid_hw, progress, generator, part_ids=None,
fg=None, device=...) -> bool [B, L]``:

============================  ==================================================  ===========
name                          mask                                                 needs cache
============================  ==================================================  ===========
``random``                    MAE: argsort of uniform noise                        no
``per-part``                  Algorithm 1 with alpha = 0 (same ratio in each part) yes
``whole-part``                Algorithm 1 with alpha = 1 (whole parts)             yes
``adaptive``                  Algorithm 1, alpha = progress ** gamma (0 -> 1)      yes
``adaptive-reverse``          Algorithm 1, alpha = 1 - progress ** gamma (1 -> 0)  yes
``fixed-alpha``               Algorithm 1 with a constant ``alpha``                yes
``block``                     BEiT block-wise                                      no
``attention``                 AttMask-High on the cache's foreground score         yes
============================  ==================================================  ===========

``alpha_max`` (default 1, the paper) caps the two adaptive schedules: ``alpha_max * progress ** gamma`` and
``alpha_max * (1 - progress ** gamma)`` (:func:`~semmae.masking.schedule.alpha_schedule`); the others refuse it.

Without a host sync: ``strategy.draw(...)`` draws a batch's random numbers (and alpha, as a tensor) up front -
kernel launches only - and ``strategy(..., draws=draws)`` is then a pure function of tensors that
``torch.compile`` traces without a graph break (``random`` and the Algorithm 1 strategies; ``block`` and
``attention`` draw from the generator themselves, as without draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from semmae.masking.baselines import attention_mask, block_mask, random_mask
from semmae.masking.schedule import SCHEDULE_SHAPES, alpha_schedule, check_alpha_max
from semmae.masking.semantic import _check_ratio, semantic_draws, semantic_guided_mask

__all__ = ["ADAPTIVE_NAMES", "MASKING_NAMES", "MaskingStrategy", "build_masking"]

GridHW = tuple[int, int] | int


def _length(grid_hw: GridHW) -> int:
    """Patches per image from a grid ``(h, w)`` or a plain count (the patch-8 setting's kept patches)."""
    if isinstance(grid_hw, int):
        return grid_hw
    h, w = grid_hw
    return int(h) * int(w)


@dataclass
class MaskingStrategy:
    """Base: a named mask generator. Subclasses implement :meth:`make`.

    Attributes:
        name: the registered name.
        mask_ratio: fraction of patches masked per image.
        needs_parts: True if the strategy reads part ids or foreground scores (a part cache is required).
    """

    name: str
    mask_ratio: float = 0.75
    needs_parts: bool = False

    def alpha(self, progress: float) -> float | None:
        """Alpha used at ``progress`` (None for strategies without one); for logging."""
        return None

    def draw(
        self,
        batch_size: int,
        grid_hw: GridHW,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        num_groups: int | None = None,
    ) -> dict[str, Tensor] | None:
        """The batch's random numbers (and alpha as a tensor ``[B]``), drawn as :meth:`__call__` would draw
        them from ``generator``; None for strategies that draw for themselves. ``num_groups``: the part groups
        ``K`` (``no_part_id + 1``) for the part-guided ones."""
        return None

    def __call__(
        self,
        batch_size: int,
        grid_hw: GridHW,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
        part_ids: Tensor | None = None,
        fg: Tensor | None = None,
        device: torch.device | str | None = None,
        no_part_id: int | None = None,
        draws: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Mask a batch.

        Args:
            batch_size: B.
            grid_hw: the patch grid ``(h, w)``, or the number of patches ``L`` (e.g. the patch-8 setting's kept
                patches, which do not form a grid).
            progress: finished iterations / total iterations, in [0, 1].
            generator: random source; the same state on the same device gives the same mask.
            part_ids: long ``[B, L]`` (part-guided strategies).
            fg: float ``[B, L]`` foreground score (``attention``).
            device: where to build the mask (default: the part maps' device, else CPU).
            no_part_id: the cache's reserved "no part" id.
            draws: from :meth:`draw` (then ``generator`` and ``progress`` are not used).

        Returns:
            bool ``[B, L]``, True = masked, exactly ``round(mask_ratio * L)`` per row.
        """
        length = _length(grid_hw)
        for label, t in (("part_ids", part_ids), ("fg", fg)):
            if t is not None and tuple(t.shape) != (batch_size, length):
                raise ValueError(
                    f"{label} must have shape [B, L]=[{batch_size}, {length}], got {list(t.shape)}"
                )
        if device is None:
            device = part_ids.device if part_ids is not None else fg.device if fg is not None else "cpu"
        return self.make(batch_size, grid_hw, progress, generator, part_ids, fg, device, no_part_id, draws)

    def make(
        self, batch_size, grid_hw, progress, generator, part_ids, fg, device, no_part_id, draws
    ) -> Tensor:
        raise NotImplementedError


@dataclass
class RandomMasking(MaskingStrategy):
    def draw(self, batch_size, grid_hw, progress=0.0, generator=None, device="cpu", num_groups=None):
        return {"noise": torch.rand(batch_size, _length(grid_hw), device=device, generator=generator)}

    def make(self, batch_size, grid_hw, progress, generator, part_ids, fg, device, no_part_id, draws):
        noise = draws["noise"] if draws else None
        return random_mask(batch_size, _length(grid_hw), self.mask_ratio, generator, device, noise=noise)


@dataclass
class BlockMasking(MaskingStrategy):
    min_block_patches: int = 16

    def make(self, batch_size, grid_hw, progress, generator, part_ids, fg, device, no_part_id, draws):
        return block_mask(batch_size, grid_hw, self.mask_ratio, generator, device, self.min_block_patches)


@dataclass
class AttentionMasking(MaskingStrategy):
    needs_parts: bool = True

    def make(self, batch_size, grid_hw, progress, generator, part_ids, fg, device, no_part_id, draws):
        if fg is None:
            raise ValueError(f"masking '{self.name}' needs foreground scores fg [B, L] (from a part cache)")
        return attention_mask(fg.to(device).float(), self.mask_ratio, generator)


@dataclass
class SemanticMasking(MaskingStrategy):
    """Algorithm 1 with alpha from :func:`alpha_schedule` (``fixed`` set for per-part / whole-part / fixed)."""

    needs_parts: bool = True
    gamma: float = 2.0
    direction: str = "up"
    fixed: float | None = None
    shape: str = "power"
    alpha_max: float = 1.0  # the adaptive schedules' cap (1 = the paper)

    def alpha(self, progress: float) -> float:
        return alpha_schedule(progress, self.gamma, self.direction, self.fixed, self.shape, self.alpha_max)

    def draw(self, batch_size, grid_hw, progress=0.0, generator=None, device="cpu", num_groups=None):
        if num_groups is None:
            return None  # K comes from the part ids (a host read): drawn inside, as without draws
        draws = semantic_draws(batch_size, num_groups, _length(grid_hw), generator, device)
        return {**draws, "alpha": torch.full((batch_size,), self.alpha(progress), device=device)}

    def make(self, batch_size, grid_hw, progress, generator, part_ids, fg, device, no_part_id, draws):
        if part_ids is None:
            raise ValueError(f"masking '{self.name}' needs part_ids [B, L] (from a part cache)")
        alpha = draws["alpha"] if draws else self.alpha(progress)
        return semantic_guided_mask(part_ids.to(device), self.mask_ratio, alpha, generator, no_part_id, draws)


MASKING_NAMES = (
    "random",
    "per-part",
    "whole-part",
    "adaptive",
    "adaptive-reverse",
    "fixed-alpha",
    "block",
    "attention",
)
#: the strategies whose alpha follows the schedule (the ones ``alpha_max`` caps)
ADAPTIVE_NAMES = ("adaptive", "adaptive-reverse")


def build_masking(
    name: str,
    mask_ratio: float = 0.75,
    gamma: float = 2.0,
    alpha: float | None = None,
    schedule_shape: str = "power",
    min_block_patches: int = 16,
    alpha_max: float = 1.0,
) -> MaskingStrategy:
    """Build a masking strategy by name (see the module table).

    Args:
        name: one of :data:`MASKING_NAMES`.
        mask_ratio: fraction masked, in (0, 1) (paper: 0.75).
        gamma: exponent of the adaptive schedule (paper: 2).
        alpha: the constant alpha of ``fixed-alpha`` (required there, refused elsewhere).
        schedule_shape: ``power`` (paper) or ``cosine`` (official release) for the adaptive schedules.
        min_block_patches: smallest block of ``block`` masking (BEiT: 16).
        alpha_max: cap of the adaptive schedules, in (0, 1] (1 = the paper); refused (unless 1) elsewhere.
    """
    _check_ratio(mask_ratio)
    if name not in MASKING_NAMES:
        raise ValueError(f"unknown masking {name!r}; choose one of {', '.join(MASKING_NAMES)}")
    if schedule_shape not in SCHEDULE_SHAPES:
        raise ValueError(
            f"schedule_shape must be one of {', '.join(SCHEDULE_SHAPES)}, got {schedule_shape!r}"
        )
    if (alpha is not None) != (name == "fixed-alpha"):
        raise ValueError("alpha is set only with masking 'fixed-alpha' (and required there)")
    alpha_max = check_alpha_max(alpha_max)
    if alpha_max != 1.0 and name not in ADAPTIVE_NAMES:
        raise ValueError(
            f"alpha_max {alpha_max:g} caps the adaptive schedules ({', '.join(ADAPTIVE_NAMES)}), not {name!r}"
        )
    if name == "random":
        return RandomMasking(name, mask_ratio)
    if name == "block":
        return BlockMasking(name, mask_ratio, min_block_patches=min_block_patches)
    if name == "attention":
        return AttentionMasking(name, mask_ratio)
    fixed = {"per-part": 0.0, "whole-part": 1.0, "fixed-alpha": alpha}.get(name)
    if fixed is not None:
        alpha_schedule(0.0, fixed=fixed)  # validates the range
    direction = "down" if name == "adaptive-reverse" else "up"
    return SemanticMasking(
        name,
        mask_ratio,
        gamma=gamma,
        direction=direction,
        fixed=fixed,
        shape=schedule_shape,
        alpha_max=alpha_max,
    )
