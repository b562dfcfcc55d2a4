"""The adaptive schedule's cap ``alpha_max`` (issue 40): alpha = alpha_max x progress ** gamma (and alpha_max x
(1 - progress ** gamma) reversed), exactly; the masks it draws are the masks of the uncapped schedule, or of a fixed
alpha, at the same alpha and seed; ``semmae pretrain --alpha-max`` reaches the strategy and is validated."""

from __future__ import annotations

import math

import pytest
import torch

from semmae.masking import alpha_schedule, build_masking, semantic_guided_mask

PROGRESS = (0.0, 0.1, 0.25, 0.5, 0.71, 0.9, 1.0)


@pytest.mark.parametrize("t", PROGRESS)
@pytest.mark.parametrize("cap", (0.5, 0.25, 1.0))
def test_schedule_is_the_cap_times_the_paper_ramp(t, cap):
    assert alpha_schedule(t, 2.0, alpha_max=cap) == pytest.approx(cap * t**2, abs=1e-15)
    assert alpha_schedule(t, 3.0, alpha_max=cap) == pytest.approx(cap * t**3, abs=1e-15)
    # reversed: starts at the cap, ends at 0
    assert alpha_schedule(t, 2.0, "down", alpha_max=cap) == pytest.approx(cap * (1 - t**2), abs=1e-15)
    cosine = (1 - math.cos(math.pi * t)) / 2
    assert alpha_schedule(t, shape="cosine", alpha_max=cap) == pytest.approx(cap * cosine, abs=1e-15)


def test_schedule_values_by_hand():
    assert alpha_schedule(0.0, 2.0, alpha_max=0.5) == 0.0
    assert alpha_schedule(0.5, 2.0, alpha_max=0.5) == 0.125  # 0.5 x 0.25
    assert alpha_schedule(1.0, 2.0, alpha_max=0.5) == 0.5  # the last step
    assert alpha_schedule(1.7, 2.0, alpha_max=0.5) == 0.5  # progress clamped
    assert alpha_schedule(0.0, 2.0, "down", alpha_max=0.5) == 0.5
    assert alpha_schedule(1.0, 2.0, "down", alpha_max=0.5) == 0.0
    # the cap of the campaign's capped arm is where the paper's gamma-2 ramp stands at progress 0.71
    assert alpha_schedule(0.71, 2.0) == pytest.approx(0.5041)
    # the default is the paper's schedule, bit for bit
    for t in PROGRESS:
        assert alpha_schedule(t, 2.0, alpha_max=1.0) == alpha_schedule(t, 2.0) == min(max(t, 0.0), 1.0) ** 2


@pytest.mark.parametrize("cap", (0.0, -0.1, 1.01, float("nan"), float("inf"), True, "0.5"))
def test_cap_outside_zero_one_is_refused(cap):
    with pytest.raises(ValueError, match=r"alpha_max must be a number in \(0, 1\]"):
        alpha_schedule(0.5, alpha_max=cap)
    with pytest.raises(ValueError, match="alpha_max"):
        build_masking("adaptive", alpha_max=cap)


def test_a_fixed_alpha_takes_no_cap():
    assert alpha_schedule(0.3, fixed=0.6, alpha_max=1.0) == 0.6
    with pytest.raises(ValueError, match="not a fixed alpha"):
        alpha_schedule(0.3, fixed=0.6, alpha_max=0.5)


@pytest.mark.parametrize("name", ("random", "block", "attention", "per-part", "whole-part", "fixed-alpha"))
def test_only_the_adaptive_schedules_take_a_cap(name):
    alpha = 0.3 if name == "fixed-alpha" else None
    build_masking(name, alpha=alpha, alpha_max=1.0)  # the default is accepted everywhere
    with pytest.raises(ValueError, match="caps the adaptive schedules"):
        build_masking(name, alpha=alpha, alpha_max=0.5)


def _parts(batch=8, length=64, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (batch, length), generator=g)


def _mask(strategy, progress, part_ids, seed=1, use_draws=False):
    batch, length = part_ids.shape
    g = torch.Generator().manual_seed(seed)
    if use_draws:  # the engine's path: random numbers and alpha (a tensor) drawn up front
        draws = strategy.draw(batch, length, progress, g, "cpu", num_groups=int(part_ids.max()) + 1)
        return strategy(batch, length, progress, None, part_ids=part_ids, draws=draws)
    return strategy(batch, length, progress, g, part_ids=part_ids)


@pytest.mark.parametrize("use_draws", (False, True))
def test_capped_masks_at_the_end_equal_the_masks_at_alpha_one_half(use_draws):
    """Same seed, same alpha -> same mask: the cap changes alpha and nothing else."""
    parts = _parts()
    capped = build_masking("adaptive", gamma=2.0, alpha_max=0.5)
    end = _mask(capped, 1.0, parts, use_draws=use_draws)
    # the uncapped ramp where alpha is exactly 0.5 (gamma 1 at progress 0.5: no rounding in progress ** gamma)
    ramp = _mask(build_masking("adaptive", gamma=1.0), 0.5, parts, use_draws=use_draws)
    fixed = _mask(build_masking("fixed-alpha", alpha=0.5), 0.0, parts, use_draws=use_draws)
    assert torch.equal(end, ramp) and torch.equal(end, fixed)
    # Algorithm 1 itself at alpha 0.5, same generator state
    direct = semantic_guided_mask(parts, 0.75, 0.5, torch.Generator().manual_seed(1))
    if not use_draws:
        assert torch.equal(end, direct)
    # and it is not the paper's last step (whole parts): the check has teeth
    paper_end = _mask(build_masking("adaptive", gamma=2.0), 1.0, parts, use_draws=use_draws)
    assert not torch.equal(end, paper_end)
    assert (end.sum(1) == 48).all()


@pytest.mark.parametrize("t", (0.25, 0.5, 0.75))
def test_capped_masks_mid_training_equal_a_fixed_alpha_of_the_formula(t):
    parts = _parts(seed=3)
    capped = build_masking("adaptive", gamma=2.0, alpha_max=0.5)
    want = 0.5 * t**2  # exact in binary for these t
    assert capped.alpha(t) == want
    fixed = build_masking("fixed-alpha", alpha=want)
    assert torch.equal(_mask(capped, t, parts), _mask(fixed, 0.0, parts))
    reverse = build_masking("adaptive-reverse", gamma=2.0, alpha_max=0.5)
    assert reverse.alpha(t) == 0.5 * (1 - t**2)
    fixed_rev = build_masking("fixed-alpha", alpha=0.5 * (1 - t**2))
    assert torch.equal(_mask(reverse, t, parts), _mask(fixed_rev, 0.0, parts))


def test_pretrain_alpha_max_reaches_the_strategy_and_is_validated():
    import argparse

    from semmae.config import add_config_args, resolve_config
    from semmae.engine.config import PretrainConfig
    from semmae.engine.pretrain import build_strategy
    from semmae.errors import UserError

    parser = argparse.ArgumentParser()
    add_config_args(parser, PretrainConfig)
    cfg = resolve_config(
        PretrainConfig, parser.parse_args(["--data", "x", "--parts", "c", "--alpha-max", "0.5"])
    )
    assert cfg.alpha_max == 0.5
    cfg.validate()
    strategy = build_strategy(cfg)
    assert strategy.alpha(1.0) == 0.5 and strategy.alpha(0.5) == 0.125
    default = resolve_config(PretrainConfig, parser.parse_args(["--data", "x", "--parts", "c"]))
    assert default.alpha_max == 1.0 and build_strategy(default).alpha(1.0) == 1.0
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(UserError, match=r"--alpha-max must be in \(0, 1\]"):
            PretrainConfig(data="x", parts="c", alpha_max=bad).validate()
    with pytest.raises(UserError, match="--alpha-max 0.5 caps the adaptive schedules"):
        PretrainConfig(data="x", masking="random", alpha_max=0.5).validate()
    reverse = PretrainConfig(data="x", parts="c", masking="adaptive-reverse", alpha_max=0.5)
    reverse.validate()
    assert build_strategy(reverse).alpha(0.0) == 0.5
