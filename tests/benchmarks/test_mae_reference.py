"""benchmarks/mae_reference.py: the plain MAE trains, and ``mae_step_flops`` agrees with PyTorch's own FLOP counter.

The independent count is ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward. It counts the
matrix products (2 FLOPs per multiply-add: linear layers, the patch convolution, batched matmuls), nothing
element-wise, and only the gradients autograd computes; so does ``mae_step_flops``, so the two should agree
exactly. Attention runs as explicit ``QK^T`` / ``AV`` matmuls here (timm's ``fused_attn`` off): the counter has no
formula for the CPU's fused attention kernel, and would count a fused backward as 2.5 forwards (it recomputes the
scores) where the analytic count says 2. The tolerance, 0.1 %, leaves room for a counter that adds some small op,
and is far below what a missing or wrong term costs: the smallest term of the tiny step, the decoder embedding,
is 0.9 % of it (checked below), and the patch projection's input gradient, which autograd skips (the image needs
no gradient), 5.8 %.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
TOL = 1e-3


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ref = _load("mae_reference")


def _unfused(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False  # attention as two explicit batched matmuls, which the counter sees
    return model


def _counted(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step().backward()
    return counter.get_total_flops()


def _analytic(size: str, batch: int, **kw) -> int:
    s = {"img_size": 224, "patch_size": 16, **ref.REFERENCE_SIZES[size], **kw}
    return ref.mae_step_flops(
        s["img_size"],
        s["patch_size"],
        s["embed_dim"],
        s["depth"],
        s["decoder_embed_dim"],
        s["decoder_depth"],
        fg_keep=s.get("fg_keep", 1.0),
        batch=batch,
    )


def test_step_flops_match_the_flop_counter_on_the_tiny_reference():
    torch.manual_seed(0)
    model = _unfused(ref.reference_model("micro"))
    imgs = torch.randn(3, 3, 32, 32)
    counted = _counted(lambda: model(imgs, 0.75)[0])
    expected = _analytic("micro", 3)
    assert abs(counted - expected) <= TOL * expected, (counted, expected)
    # a wrong term would show: the smallest one (decoder embedding, 5 tokens x 32 x 32) is well above TOL
    smallest = 3 * 3 * 2 * 5 * 32 * 32
    assert smallest > 5 * TOL * expected


@pytest.mark.parametrize("name, fg_keep", [("mae_vit_micro_patch8", 1.0), ("mae_vit_micro_patch4", 0.25)])
def test_step_flops_match_the_flop_counter_on_semmaes_model(name, fg_keep):
    """The held step's model (semmae's MAE) does the same products, with the ViT-B/8 foreground keep too."""
    from semmae.masking import foreground_keep_index, num_masked
    from semmae.models import create_model

    torch.manual_seed(0)
    model = _unfused(create_model(name))
    c = model.config
    b, grid = 2, c.img_size // c.patch_size
    imgs = torch.randn(b, 3, c.img_size, c.img_size)
    keep_index = None
    length = grid * grid
    if fg_keep < 1:
        keep_index = foreground_keep_index(torch.rand(b, length), fg_keep)
        length = keep_index.shape[1]
    n = num_masked(length, 0.75)
    mask = torch.argsort(torch.rand(b, length), dim=1) < n
    counted = _counted(lambda: model(imgs, mask, keep_index=keep_index, num_masked=n)["loss"])
    expected = ref.mae_step_flops(
        c.img_size,
        c.patch_size,
        c.embed_dim,
        c.depth,
        c.decoder_embed_dim,
        c.decoder_depth,
        fg_keep=fg_keep,
        batch=b,
    )
    assert abs(counted - expected) <= TOL * expected, (counted, expected)


def test_step_flops_of_vit_b16_on_the_meta_device():
    """ViT-B/16 at full size, shapes only (no arithmetic runs on ``meta``): about 3 x 20 GFLOPs per image."""
    with torch.device("meta"):
        model = _unfused(ref.reference_model("base"))
        imgs = torch.empty(2, 3, 224, 224)
    counted = _counted(lambda: model(imgs, 0.75)[0])
    expected = _analytic("base", 2)
    assert abs(counted - expected) <= TOL * expected, (counted, expected)
    assert 55e9 < expected / 2 < 65e9


def test_the_reference_trains_and_the_peak_table():
    torch.manual_seed(0)
    step = ref.ReferenceStep(ref.reference_model("micro"), "cpu", precision="fp32", batch_size=4, blr=1e-2)
    imgs = torch.randn(4, 3, 32, 32)
    losses = [float(step(imgs)) for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    kept, mask, restore = ref.ReferenceMAE.random_masking(
        torch.arange(16.0).view(1, 16, 1).repeat(2, 1, 1), 0.75
    )
    assert kept.shape == (2, 4, 1) and mask.sum(1).tolist() == [12, 12]
    # the kept tokens are the unmasked ones, and restore undoes the shuffle
    assert sorted(kept[0, :, 0].tolist()) == torch.nonzero(mask[0] == 0)[:, 0].float().tolist()
    assert ref.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989.0)
    assert ref.peak_bf16_tflops("NVIDIA H200") == ("H200", 989.0)
    assert ref.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == ("A100", 312.0)
    assert ref.peak_bf16_tflops("NVIDIA H100 PCIe") is None and ref.peak_bf16_tflops("Tesla V100") is None
