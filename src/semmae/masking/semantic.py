"""Semantic-guided masking: the paper's Algorithm 1 (Sec. 3.2), batched and vectorised.

For every image of a batch and every part ``k`` (cells in no part form one more group, like the official
release's seventh slot), Algorithm 1 sets

* ``num_mask1[k] = ratio * |part k|`` - mask the same fraction of every part (*intra-part* masking, alpha = 0);
* ``num_mask2[k]`` - take whole parts in a random order until ``ratio * L`` patches are covered, the last one
  partly (the algorithm's ``cumsum`` / ``where`` steps: ``min(|k|, max(ratio*L - cum_before[k], 0))``; alpha = 1);
* ``num_mask = (1 - alpha) * num_mask1 + alpha * num_mask2``,

and masks ``num_mask[k]`` patches drawn uniformly at random inside part ``k``. The real-valued counts are rounded
by largest remainder (ties broken at random) so that every image gets exactly ``round(ratio * L)`` masked
patches and no part gets more patches than it has. With alpha = 0 every part is masked within one patch of
``ratio * |k|``; with alpha = 1 the counts are already integers and at most one part is partly masked.

Everything is a handful of batched tensor ops over ``[B, L]`` and ``[B, K]``: no Python loop over images or
parts. Determinism: the same generator state on the same device gives the same mask.

No host sync: given the group count (``no_part_id``, or ``draws`` drawn beforehand by :func:`semantic_draws`) the
mask is a pure function of tensors - nothing is read back to the host (checks become device-side asserts off the
CPU, see :mod:`semmae.masking._checks`), so a GPU step never waits here and ``torch.compile`` traces it whole.
"""

from __future__ import annotations

import torch
from torch import Tensor

from semmae.masking._checks import assert_on_device, may_read

__all__ = [
    "num_masked",
    "part_sizes",
    "semantic_draws",
    "semantic_guided_counts",
    "semantic_guided_mask",
    "fill_in_order",
]


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """The number of masked patches per image: ``round(mask_ratio * num_patches)`` (Python rounding)."""
    return int(round(mask_ratio * num_patches))


def _check_ratio(mask_ratio: float) -> None:
    if not isinstance(mask_ratio, (int, float)) or isinstance(mask_ratio, bool) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be a number in (0, 1), got {mask_ratio!r}")


def _check_alpha(alpha: float | Tensor, batch: int, device: torch.device) -> Tensor:
    """Return alpha as a float tensor ``[B, 1]`` on ``device`` after checking it lies in [0, 1]."""
    if isinstance(alpha, Tensor):
        if alpha.dim() == 0:
            alpha = alpha.expand(batch)
        if alpha.shape != (batch,):
            raise ValueError(
                f"alpha must be a float or a tensor of shape [B]=[{batch}], got shape {list(alpha.shape)}"
            )
        if alpha.is_complex() or not (alpha.is_floating_point() or alpha.dtype in (torch.int64, torch.int32)):
            raise ValueError(f"alpha must be real-valued, got dtype {alpha.dtype}")
        a = alpha.to(device=device, dtype=torch.float32)
        if not may_read(a):
            assert_on_device((a >= 0) & (a <= 1), "alpha must lie in [0, 1]")
        elif not bool(((a >= 0) & (a <= 1)).all()):
            raise ValueError(
                f"alpha must lie in [0, 1], got values in [{a.min().item():g}, {a.max().item():g}]"
            )
        return a.unsqueeze(1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] or a tensor [B], got {alpha!r}")
    return torch.full((batch, 1), float(alpha), device=device)


def part_sizes(part_ids: Tensor, num_groups: int) -> Tensor:
    """Patches per group. ``part_ids`` long ``[B, L]`` in ``[0, num_groups)`` -> float ``[B, K]``."""
    sizes = torch.zeros(part_ids.shape[0], num_groups, device=part_ids.device)
    return sizes.scatter_add_(1, part_ids, torch.ones_like(part_ids, dtype=sizes.dtype))


def fill_in_order(capacity: Tensor, order: Tensor, total: Tensor | float) -> Tensor:
    """Pour ``total`` units into groups visited in ``order``, each taking at most its ``capacity``.

    The ``cumsum`` / ``where`` step of Algorithm 1: group ``k`` gets ``min(cap[k], max(total - cum_before[k], 0))``
    where ``cum_before`` sums the capacities of the groups visited before it.

    Args:
        capacity: float ``[B, K]``.
        order: long ``[B, K]``, a permutation of the groups per row (visit order).
        total: float scalar or ``[B, 1]``.

    Returns:
        float ``[B, K]`` in the original group order.
    """
    cap_sorted = capacity.gather(1, order)
    before = cap_sorted.cumsum(1) - cap_sorted
    taken_sorted = torch.minimum(cap_sorted, (total - before).clamp_min(0))
    return torch.zeros_like(capacity).scatter_(1, order, taken_sorted)


def semantic_draws(
    batch: int,
    num_groups: int,
    length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Every random number one semantic-guided mask uses, drawn in the order :func:`semantic_guided_mask` draws
    them (so passing them gives the mask the generator would): ``part_order`` and ``tie`` float ``[B, K]``
    (the whole-part visit order, the rounding tie break), ``key`` long ``[B, L]`` (the order inside each part).
    Drawing is a few kernel launches; the mask from draws is then a pure function (``torch.compile`` traces it)."""
    return {
        "part_order": torch.rand(batch, num_groups, device=device, generator=generator),
        "tie": torch.rand(batch, num_groups, device=device, generator=generator),
        "key": torch.randint(0, 2**31, (batch, length), device=device, generator=generator),
    }


def semantic_guided_counts(
    sizes: Tensor,
    mask_ratio: float,
    alpha: Tensor,
    n_mask: int,
    generator: torch.Generator | None = None,
    draws: dict[str, Tensor] | None = None,
) -> Tensor:
    """Integer masked-patch counts per group (Algorithm 1, lines ``num_mask1`` .. ``num_mask``).

    Args:
        sizes: float ``[B, K]`` patches per group; rows sum to ``L``.
        mask_ratio: in (0, 1).
        alpha: float ``[B, 1]`` in [0, 1].
        n_mask: the exact number of masked patches per image.
        generator: random source for the part order and tie breaks.
        draws: ``part_order`` and ``tie`` from :func:`semantic_draws` instead of ``generator``.

    Returns:
        float ``[B, K]`` of whole numbers, ``0 <= counts <= sizes``, every row summing to ``n_mask``.
    """
    batch, k = sizes.shape
    device = sizes.device
    num_mask1 = mask_ratio * sizes
    order_noise = draws["part_order"] if draws else torch.rand(batch, k, device=device, generator=generator)
    part_order = order_noise.argsort(1)
    num_mask2 = fill_in_order(sizes, part_order, float(n_mask))
    target = (1.0 - alpha) * num_mask1 + alpha * num_mask2
    # Largest-remainder rounding to an exact total: floor, then hand the missing units to the groups with the
    # largest fractional parts (random tie break), never beyond a group's size.
    floor = target.floor().clamp(max=sizes)
    deficit = (n_mask - floor.sum(1, keepdim=True)).clamp_min(0)
    frac = target - floor
    tie = draws["tie"] if draws else torch.rand(batch, k, device=device, generator=generator)
    order = torch.argsort(frac + 1e-4 * tie, dim=1, descending=True)
    room = sizes - floor
    extra = fill_in_order(room.clamp(max=1.0), order, deficit)  # at most one unit per group ...
    rest = deficit - extra.sum(1, keepdim=True)  # ... which always suffices; this guards float round-off
    return floor + extra + fill_in_order(room - extra, order, rest)


def _check_part_ids(part_ids: Tensor, no_part_id: int | None, num_groups: int | None = None) -> int:
    """Validate ``part_ids`` and return the number of groups ``K``: ``no_part_id + 1``, else ``num_groups`` (the
    draws' width), else ``max(part_ids) + 1`` (the one case that reads the ids back to the host)."""
    if not isinstance(part_ids, Tensor):
        raise ValueError(f"part_ids must be a torch.Tensor [B, L], got {type(part_ids).__name__}")
    if part_ids.dim() != 2:
        raise ValueError(f"part_ids must have shape [B, L], got shape {list(part_ids.shape)}")
    if part_ids.dtype == torch.bool or part_ids.is_floating_point() or part_ids.is_complex():
        raise ValueError(f"part_ids must be an integer tensor, got dtype {part_ids.dtype}")
    if part_ids.shape[1] == 0:
        raise ValueError("part_ids must have at least one patch per image (L >= 1)")
    if no_part_id is not None and no_part_id < 0:
        raise ValueError(f"no_part_id must be >= 0, got {no_part_id}")
    if part_ids.numel() == 0:
        return 1
    k = no_part_id + 1 if no_part_id is not None else num_groups
    if k is not None and not may_read(part_ids):
        assert_on_device((part_ids >= 0) & (part_ids < k), f"part_ids must lie in [0, {k})")
        return k
    lo_t, hi_t = torch.aminmax(part_ids)
    lo, hi = int(lo_t), int(hi_t)
    if lo < 0:
        raise ValueError(f"part_ids must be >= 0, got minimum {lo}")
    if no_part_id is not None:
        if hi > no_part_id:
            raise ValueError(f"part_ids must be <= no_part_id={no_part_id}, got maximum {hi}")
        return no_part_id + 1
    if num_groups is not None and hi >= num_groups:
        raise ValueError(f"part_ids must be < {num_groups} (the draws' groups), got maximum {hi}")
    return num_groups if num_groups is not None else hi + 1


def semantic_guided_mask(
    part_ids: Tensor,
    mask_ratio: float,
    alpha: float | Tensor,
    generator: torch.Generator | None = None,
    no_part_id: int | None = None,
    draws: dict[str, Tensor] | None = None,
) -> Tensor:
    """Semantic-guided mask of a batch (paper Algorithm 1).

    Args:
        part_ids: integer ``[B, L]`` part id of every patch (row-major over the patch grid). Ids are ``>= 0``;
            cells in no part carry a reserved id and are masked like one more part.
        mask_ratio: fraction of patches to mask, in (0, 1); every image gets exactly ``round(ratio * L)``.
        alpha: in [0, 1], a float or a float tensor ``[B]``: 0 = the same fraction of every part,
            1 = whole parts (see :func:`semmae.masking.alpha_schedule`).
        generator: random source (on ``part_ids``' device); the same state gives the same mask.
        no_part_id: the reserved "no part" id, if known (``PartCache.no_part_id``). It fixes ``K = no_part_id + 1``
            and ids above it are refused; without it ``K = max(part_ids) + 1`` (a host sync).
        draws: the random numbers from :func:`semantic_draws` instead of ``generator`` (their width fixes ``K``
            when ``no_part_id`` is not given).

    Returns:
        bool ``[B, L]``, True = masked.

    Raises:
        ValueError: a ratio outside (0, 1), alpha outside [0, 1], part ids of the wrong dtype, shape or range.
    """
    _check_ratio(mask_ratio)
    k = _check_part_ids(part_ids, no_part_id, draws["part_order"].shape[1] if draws else None)
    if draws is not None and (draws["part_order"].shape[1] != k or draws["key"].shape != part_ids.shape):
        raise ValueError(f"draws must be for K={k} groups and L={part_ids.shape[1]} patches (semantic_draws)")
    batch, length = part_ids.shape
    device = part_ids.device
    alpha_t = _check_alpha(alpha, batch, device)
    ids = part_ids.long()
    n_mask = num_masked(length, mask_ratio)

    sizes = part_sizes(ids, k)
    if draws is None:
        draws = semantic_draws(batch, k, length, generator, device)
    counts = semantic_guided_counts(sizes, mask_ratio, alpha_t, n_mask, draws=draws)

    # Uniform choice inside each part: sort patches by (part id, random key) in one int64 sort, so each part's
    # patches form a contiguous run in random order; a patch is masked when its rank in the run < its count.
    order = torch.argsort(ids * 2**31 + draws["key"], dim=1)
    ids_sorted = ids.gather(1, order)
    start = sizes.cumsum(1) - sizes
    rank = torch.arange(length, device=device).unsqueeze(0) - start.gather(1, ids_sorted).long()
    masked_sorted = rank < counts.gather(1, ids_sorted).long()
    return torch.zeros_like(masked_sorted).scatter_(1, order, masked_sorted)
