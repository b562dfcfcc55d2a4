"""Algorithm 1 (semantic-guided masking): exact counts, extremes, uniformity, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semmae.masking import num_masked, semantic_guided_mask
from semmae.masking.semantic import part_sizes, semantic_guided_counts

from .reference import reference_counts


def per_part_counts(part_ids: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = torch.nn.functional.one_hot(part_ids.long(), k).sum(1)
    masked = (torch.nn.functional.one_hot(part_ids.long(), k) * mask.unsqueeze(-1)).sum(1)
    return sizes, masked


part_maps = st.builds(
    lambda b, n, k, seed: torch.randint(0, k, (b, n), generator=torch.Generator().manual_seed(seed)),
    st.integers(1, 5),
    st.integers(1, 80),
    st.integers(1, 9),
    st.integers(0, 2**16),
)


@settings(max_examples=60, deadline=None)
@given(part_ids=part_maps, ratio=st.floats(0.05, 0.95), alpha=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_exact_count_per_image(part_ids, ratio, alpha, seed):
    mask = semantic_guided_mask(part_ids, ratio, alpha, torch.Generator().manual_seed(seed))
    assert mask.dtype == torch.bool and mask.shape == part_ids.shape
    assert (mask.sum(1) == round(ratio * part_ids.shape[1])).all()
    sizes, masked = per_part_counts(part_ids, mask, int(part_ids.max()) + 1)
    assert (masked <= sizes).all()


@settings(max_examples=60, deadline=None)
@given(part_ids=part_maps, ratio=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_alpha_zero_masks_every_part_within_one_patch(part_ids, ratio, seed):
    mask = semantic_guided_mask(part_ids, ratio, 0.0, torch.Generator().manual_seed(seed))
    sizes, masked = per_part_counts(part_ids, mask, int(part_ids.max()) + 1)
    assert ((masked - ratio * sizes).abs() < 1.0).all()


@settings(max_examples=60, deadline=None)
@given(part_ids=part_maps, ratio=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_alpha_one_leaves_at_most_one_part_partial(part_ids, ratio, seed):
    mask = semantic_guided_mask(part_ids, ratio, 1.0, torch.Generator().manual_seed(seed))
    sizes, masked = per_part_counts(part_ids, mask, int(part_ids.max()) + 1)
    partial = (masked > 0) & (masked < sizes)
    assert (partial.sum(1) <= 1).all()


@settings(max_examples=40, deadline=None)
@given(part_ids=part_maps, ratio=st.floats(0.05, 0.95), alpha=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_counts_match_loop_reference(part_ids, ratio, alpha, seed):
    """The vectorised counts equal a line-by-line transcription, fed the same random draws."""
    k = int(part_ids.max()) + 1
    b, length = part_ids.shape
    sizes = part_sizes(part_ids, k)
    counts = semantic_guided_counts(
        sizes,
        ratio,
        torch.full((b, 1), alpha),
        num_masked(length, ratio),
        torch.Generator().manual_seed(seed),
    )
    g = torch.Generator().manual_seed(seed)  # the draws the vectorised code makes, in its order
    order = torch.rand(b, k, generator=g).argsort(1)
    tie = torch.rand(b, k, generator=g)
    for i in range(b):
        ref = reference_counts([int(s) for s in sizes[i]], ratio, alpha, order[i].tolist(), tie[i].tolist())
        assert counts[i].long().tolist() == ref


def test_mask_realises_the_counts():
    part_ids = torch.randint(0, 6, (8, 196), generator=torch.Generator().manual_seed(1))
    mask = semantic_guided_mask(part_ids, 0.75, 0.4, torch.Generator().manual_seed(3))
    counts = semantic_guided_counts(
        part_sizes(part_ids, 6), 0.75, torch.full((8, 1), 0.4), 147, torch.Generator().manual_seed(3)
    )
    _, masked = per_part_counts(part_ids, mask, 6)
    assert torch.equal(masked, counts.long())


def test_whole_parts_in_paper_example():
    """Four parts of 4 patches, ratio 0.75, alpha 1: exactly three whole parts are masked."""
    part_ids = torch.arange(4).repeat_interleave(4).unsqueeze(0).repeat(50, 1)
    mask = semantic_guided_mask(part_ids, 0.75, 1.0, torch.Generator().manual_seed(0))
    _, masked = per_part_counts(part_ids, mask, 4)
    assert (masked.sort(1).values == torch.tensor([0, 4, 4, 4])).all()
    # the untouched part is random, not always the same one
    assert len(set(masked.argmin(1).tolist())) == 4


def test_empty_parts_and_reserved_no_part_id():
    part_ids = torch.tensor([[0, 0, 3, 3, 3, 3, 7, 7]])  # parts 1, 2, 4, 5, 6 are empty; 7 = "no part"
    mask = semantic_guided_mask(part_ids, 0.5, 0.0, torch.Generator().manual_seed(0), no_part_id=7)
    _, masked = per_part_counts(part_ids, mask, 8)
    assert masked.tolist() == [[1, 0, 0, 2, 0, 0, 0, 1]]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_single_part_and_all_background(alpha):
    single = torch.zeros(3, 49, dtype=torch.long)
    background = torch.full((3, 49), 6, dtype=torch.uint8)  # every cell carries the "no part" id
    for part_ids in (single, background):
        mask = semantic_guided_mask(part_ids, 0.75, alpha, torch.Generator().manual_seed(0), no_part_id=6)
        assert (mask.sum(1) == 37).all()


def test_uniform_choice_inside_a_part():
    """Every patch of a part is picked about equally often (chi-square, fixed seed)."""
    part_ids = torch.tensor([[0] * 10 + [1] * 6])
    trials = 4000
    mask = semantic_guided_mask(part_ids.repeat(trials, 1), 0.5, 0.0, torch.Generator().manual_seed(0))
    hits = mask.sum(0).double()  # part 0: 5 of 10 masked, part 1: 3 of 6
    for sl, p in ((slice(0, 10), 0.5), (slice(10, 16), 0.5)):
        expected = trials * p
        chi2 = (((hits[sl] - expected) ** 2) / expected).sum().item()
        dof = hits[sl].numel() - 1
        assert chi2 < dof + 5 * math.sqrt(2 * dof), chi2  # far below a 1e-4 tail; a biased pick blows it up


def test_tensor_alpha_per_image():
    part_ids = torch.randint(0, 4, (2, 64), generator=torch.Generator().manual_seed(0))
    mask = semantic_guided_mask(part_ids, 0.75, torch.tensor([0.0, 1.0]), torch.Generator().manual_seed(0))
    sizes, masked = per_part_counts(part_ids, mask, 4)
    assert ((masked[0] - 0.75 * sizes[0]).abs() < 1).all()
    assert ((masked[1] > 0) & (masked[1] < sizes[1])).sum() <= 1


def test_deterministic_for_a_generator_state():
    part_ids = torch.randint(0, 6, (4, 196), generator=torch.Generator().manual_seed(0))
    a = semantic_guided_mask(part_ids, 0.75, 0.3, torch.Generator().manual_seed(5))
    b = semantic_guided_mask(part_ids, 0.75, 0.3, torch.Generator().manual_seed(5))
    c = semantic_guided_mask(part_ids, 0.75, 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(mask_ratio=0.0), "mask_ratio must be a number in (0, 1)"),
        (dict(mask_ratio=1.0), "mask_ratio must be a number in (0, 1)"),
        (dict(alpha=1.5), "alpha must be a number in [0, 1]"),
        (dict(alpha=torch.tensor([0.2, -0.1])), "alpha must lie in [0, 1]"),
        (dict(alpha=torch.tensor([0.2, 0.3, 0.4])), "alpha must be a float or a tensor of shape [B]"),
        (dict(part_ids=torch.zeros(2, 16)), "part_ids must be an integer tensor"),
        (dict(part_ids=torch.zeros(2, 4, 4, dtype=torch.long)), "part_ids must have shape [B, L]"),
        (dict(part_ids=torch.full((2, 16), -1)), "part_ids must be >= 0"),
        (dict(part_ids=torch.full((2, 16), 9), no_part_id=6), "part_ids must be <= no_part_id=6"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    args = dict(part_ids=torch.zeros(2, 16, dtype=torch.long), mask_ratio=0.75, alpha=0.5) | kwargs
    with pytest.raises(ValueError) as e:
        semantic_guided_mask(**args)
    assert message in str(e.value)
