"""The pretrain step's forward reads nothing back from the device: ``torch._dynamo.explain`` finds no graph break
(a graph break there is also a host sync on a GPU) with the paper's adaptive masking, with and without the
patch-8 foreground keep, and with random masking; the masks are those the seeded generator gives."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from semmae.engine.precision import resolve_precision
from semmae.engine.pretrain import Pretrainer
from semmae.masking import build_masking, foreground_keep_index, semantic_guided_mask
from semmae.models import create_model


def _trainer(masking: str, fg_keep: float):
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    return SimpleNamespace(
        cfg=SimpleNamespace(img_size=32, fg_keep=fg_keep, seed=0),
        patch_size=8,
        strategy=build_masking(masking),
        device=cpu,
        no_part_id=4,
        model=create_model("mae_vit_micro_patch8", img_size=32),
        precision=resolve_precision("fp32", cpu),
        mask_gen=torch.Generator(),
        plan=SimpleNamespace(total_steps=10),
    )


def _inputs(batch: int = 4, length: int = 16):
    g = torch.Generator().manual_seed(1)
    imgs = torch.randn(batch, 3, 32, 32, generator=g)
    return imgs, torch.randint(0, 5, (batch, length), generator=g), torch.rand(batch, length, generator=g)


@pytest.mark.parametrize("masking, fg_keep", [("adaptive", 1.0), ("adaptive", 0.5), ("random", 1.0)])
def test_pretrain_step_forward_has_no_graph_break(masking, fg_keep):
    torch._dynamo.reset()
    t = _trainer(masking, fg_keep)
    imgs, part_ids, fg = _inputs()
    draws = Pretrainer.draws(t, imgs.shape[0], 3, 1)

    def step(imgs, part_ids, fg, draws):
        return Pretrainer.forward_step(t, imgs, part_ids, fg, draws)[0]["loss"]

    report = torch._dynamo.explain(step)(imgs, part_ids, fg, draws)
    assert report.graph_break_count == 0, [b.reason.splitlines()[0] for b in report.break_reasons]


def test_the_step_masks_are_the_seeded_generators():
    # drawing up front changes nothing: the same (seed, step, shard) gives the masks the generator gave before
    t = _trainer("adaptive", 0.5)
    imgs, part_ids, fg = _inputs()
    out, mask, keep = Pretrainer.forward_step(t, imgs, part_ids, fg, Pretrainer.draws(t, 4, 3, 1))
    from semmae.utils.seed import mix_seed

    gen = torch.Generator().manual_seed(mix_seed(0, 3, 1))
    ref_keep = foreground_keep_index(fg, 0.5, gen)
    alpha = t.strategy.alpha(3 / 10)
    ref = semantic_guided_mask(part_ids.gather(1, ref_keep), 0.75, alpha, gen, no_part_id=4)
    assert torch.equal(keep, ref_keep) and torch.equal(mask, ref)
    assert (mask.sum(1) == 6).all() and torch.isfinite(out["loss"])
