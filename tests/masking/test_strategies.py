"""Schedule values, baselines, the strategy registry, and the MAE index adapter."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semmae.masking import (
    MASKING_NAMES,
    alpha_schedule,
    attention_mask,
    block_mask,
    build_masking,
    foreground_keep_index,
    ids_to_mask,
    mask_to_ids,
    random_mask,
)


def test_alpha_schedule_values():
    assert alpha_schedule(0.0) == 0.0 and alpha_schedule(1.0) == 1.0
    assert alpha_schedule(0.5) == pytest.approx(0.25)  # (epoch / total) ** 2
    assert alpha_schedule(0.5, gamma=3.0) == pytest.approx(0.125)
    assert alpha_schedule(0.5, direction="down") == pytest.approx(0.75)
    assert alpha_schedule(0.3, fixed=0.6) == 0.6
    assert alpha_schedule(0.25, shape="cosine") == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert alpha_schedule(1.7) == 1.0 and alpha_schedule(-0.2) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(direction="sideways"), "direction must be one of"),
        (dict(fixed=1.2), "fixed alpha must lie in [0, 1]"),
        (dict(shape="linear"), "shape must be one of"),
        (dict(gamma=0.0), "gamma must be > 0"),
    ],
)
def test_alpha_schedule_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        alpha_schedule(0.5, **kwargs)


@pytest.mark.parametrize("name", MASKING_NAMES)
def test_every_strategy_masks_exactly(name):
    strategy = build_masking(name, mask_ratio=0.75, alpha=0.3 if name == "fixed-alpha" else None)
    g = torch.Generator().manual_seed(0)
    part_ids = torch.randint(0, 5, (6, 49), generator=g)
    fg = torch.rand(6, 49, generator=g)
    kwargs = dict(part_ids=part_ids, fg=fg) if strategy.needs_parts else {}
    mask = strategy(6, (7, 7), 0.5, torch.Generator().manual_seed(1), **kwargs)
    assert mask.shape == (6, 49) and mask.dtype == torch.bool
    assert (mask.sum(1) == 37).all()
    again = strategy(6, (7, 7), 0.5, torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(mask, again)


def test_needs_parts_flags_and_refusals():
    flags = {
        n: build_masking(n, alpha=0.5 if n == "fixed-alpha" else None).needs_parts for n in MASKING_NAMES
    }
    assert {n for n, f in flags.items() if not f} == {"random", "block"}
    with pytest.raises(ValueError, match="needs part_ids"):
        build_masking("adaptive")(2, (4, 4), 0.5)
    with pytest.raises(ValueError, match="needs foreground scores"):
        build_masking("attention")(2, (4, 4), 0.5)
    with pytest.raises(ValueError, match="part_ids must have shape"):
        build_masking("adaptive")(2, (4, 4), 0.5, part_ids=torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown masking 'foo'"):
        build_masking("foo")
    with pytest.raises(ValueError, match="alpha is set only with masking 'fixed-alpha'"):
        build_masking("fixed-alpha")


def test_strategy_alphas_follow_their_schedule():
    assert build_masking("adaptive").alpha(0.5) == pytest.approx(0.25)
    assert build_masking("adaptive-reverse").alpha(0.5) == pytest.approx(0.75)
    assert build_masking("per-part").alpha(0.9) == 0.0 and build_masking("whole-part").alpha(0.1) == 1.0
    assert build_masking("random").alpha(0.5) is None


def test_strategy_accepts_a_patch_count_for_kept_patches():
    """The patch-8 setting masks among the kept patches, which need not form a grid."""
    part_ids = torch.randint(0, 4, (2, 13), generator=torch.Generator().manual_seed(0))
    mask = build_masking("adaptive")(2, 13, 0.3, part_ids=part_ids)
    assert mask.shape == (2, 13) and (mask.sum(1) == 10).all()


def test_random_mask_is_uniform_over_positions():
    mask = random_mask(4000, 16, 0.75, torch.Generator().manual_seed(0))
    freq = mask.double().mean(0)
    assert (freq - 0.75).abs().max() < 0.03


def test_block_mask_forms_blocks():
    mask = block_mask(64, (14, 14), 0.4, torch.Generator().manual_seed(0)).view(64, 14, 14)
    assert (mask.flatten(1).sum(1) == round(0.4 * 196)).all()
    # blocks: a masked patch usually has a masked 4-neighbour (random masking at 0.4 gives ~0.87 vs ~0.99)
    pad = torch.nn.functional.pad(mask.float(), (1, 1, 1, 1))
    neigh = pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
    assert ((neigh > 0) & mask).sum() / mask.sum() > 0.95
    with pytest.raises(ValueError, match="block masking needs the patch grid"):
        block_mask(2, 196, 0.5)


def test_attention_mask_takes_highest_scores():
    score = torch.arange(10.0).repeat(3, 1)
    mask = attention_mask(score, 0.3)
    assert mask[:, 7:].all() and not mask[:, :7].any()


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 4), length=st.integers(1, 40), ratio=st.floats(0.05, 0.95), seed=st.integers(0, 99))
def test_mask_to_ids_round_trip(b, length, ratio, seed):
    mask = random_mask(b, length, ratio, torch.Generator().manual_seed(seed))
    ids_keep, ids_restore = mask_to_ids(mask)
    n_keep = length - round(ratio * length)
    assert ids_keep.shape == (b, n_keep) and ids_restore.shape == (b, length)
    assert (~mask.gather(1, ids_keep)).all()
    assert torch.equal(ids_to_mask(ids_restore, n_keep), mask)
    # keep ∪ masked is a permutation, and MAE's unshuffle puts tokens back in place
    tokens = torch.arange(length).repeat(b, 1)
    ids_shuffle = torch.argsort(ids_restore, 1)
    assert torch.equal(tokens.gather(1, ids_shuffle).gather(1, ids_restore), tokens)
    assert torch.equal(ids_shuffle[:, :n_keep], ids_keep)


def test_mask_to_ids_refuses_uneven_rows():
    with pytest.raises(ValueError, match="same number of masked patches"):
        mask_to_ids(torch.tensor([[True, False], [True, True]]))
    with pytest.raises(ValueError, match="bool tensor"):
        mask_to_ids(torch.zeros(2, 3))


def test_foreground_keep_index():
    fg = torch.tensor([[0.1, 0.9, 0.5, 0.8, 0.0, 0.7, 0.2, 0.3]])
    assert foreground_keep_index(fg, 0.25).tolist() == [[1, 3]]
    assert foreground_keep_index(fg, 0.5).tolist() == [[1, 2, 3, 5]]
    with pytest.raises(ValueError, match="keep_fraction must lie in"):
        foreground_keep_index(fg, 0.0)


def test_foreground_keep_index_breaks_ties_uniformly():
    """Many equal scores at the cut (5-bit cache foreground, resized cells): every tied cell is kept equally often,
    higher cells always, lower never; the draw is a function of the generator's seed."""
    length, draws = 64, 3000
    fg = torch.zeros(length)
    cells = torch.randperm(length, generator=torch.Generator().manual_seed(3))
    high, tied, low = cells[:8], cells[8:32], cells[32:]  # keep 16 = 8 high + 8 of the 24 tied
    fg[high], fg[tied] = 1.0, 0.5
    keep = foreground_keep_index(fg.repeat(draws, 1), 0.25, torch.Generator().manual_seed(0))
    assert keep.shape == (draws, 16) and keep.dtype == torch.long
    assert bool((keep[:, 1:] > keep[:, :-1]).all())  # sorted ascending, no repeats
    counts = torch.zeros(length).index_add_(0, keep.flatten(), torch.ones(keep.numel()))
    assert bool((counts[high] == draws).all()) and bool((counts[low] == 0).all())
    tied_counts = counts[tied]
    expected = draws * 8 / 24  # 1000 per tied cell
    chi2 = float(((tied_counts - expected) ** 2 / expected).sum())
    # 23 degrees of freedom: P(chi2 > 60) ~ 3e-5 for a uniform choice; a raster tie break gives chi2 = 48000
    assert chi2 < 60, (chi2, tied_counts.tolist())
    assert float(tied_counts.max() / tied_counts.min()) < 1.25
    # the lowest-index half of the tied cells (the top rows) gets half of the tied picks, not all of them
    first_half = tied.sort().values[:12]
    share = float(counts[first_half].sum() / tied_counts.sum())
    assert abs(share - 0.5) < 0.03
    # deterministic given the generator's seed; another seed draws another set
    again = foreground_keep_index(fg.repeat(draws, 1), 0.25, torch.Generator().manual_seed(0))
    other = foreground_keep_index(fg.repeat(draws, 1), 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(keep, again) and not torch.equal(keep, other)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 80),
    st.floats(0.05, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_foreground_keep_index_keeps_the_top_scores(batch, length, keep_fraction, seed):
    """5-bit scores (many ties): the kept set is exactly the cells above the cut, plus some of those at the cut."""
    gen = torch.Generator().manual_seed(seed)
    fg = torch.randint(0, 32, (batch, length), generator=gen).float() / 31
    keep = foreground_keep_index(fg, keep_fraction, torch.Generator().manual_seed(seed))
    n_keep = max(1, round(keep_fraction * length))
    assert keep.shape == (batch, n_keep)
    assert bool((keep[:, 1:] > keep[:, :-1]).all())
    cut = fg.sort(1, descending=True).values[:, n_keep - 1 : n_keep]  # the n_keep-th highest score per row
    kept = torch.zeros_like(fg, dtype=torch.bool).scatter_(1, keep, True)
    assert bool((kept | (fg <= cut)).all())  # every cell above the cut is kept
    assert bool((~kept | (fg >= cut)).all())  # no cell below the cut is kept
