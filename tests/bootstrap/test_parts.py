"""The pieces of self-distillation against direct formulas: EMA, centring, the two losses, views and masks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from semmae.bootstrap.loss import Centering, class_token_loss, masked_patch_loss
from semmae.bootstrap.model import Student, backbone_spec, ema_update_, teacher_from_student
from semmae.bootstrap.views import MultiCropTransform, random_patch_masks
from semmae.engine.schedule import warmup_constant_schedule
from semmae.errors import UserError

SPEC = backbone_spec("vit_micro_patch8", 32)
HEAD = dict(out_dim=16, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)


def test_backbone_spec_uses_the_registry_sizes():
    assert backbone_spec("vit_small_patch16", 224) == dict(
        name="vit_small_patch16",
        img_size=224,
        patch_size=16,
        embed_dim=384,
        depth=12,
        num_heads=6,
        mlp_ratio=4.0,
    )
    assert backbone_spec("vit_tiny_patch4", 48, depth=6)["patch_size"] == 4  # any patch of a registered size
    for bad in ("resnet50", "vit_giant_patch14"):
        with pytest.raises(UserError):
            backbone_spec(bad, 224)


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    student = Student(SPEC, HEAD)
    teacher = teacher_from_student(student, SPEC, HEAD)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_state = student.state_dict()
    ema_update_(teacher, student, 0.9)
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * s_state[k], msg=k)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert "masked_embed" in s_state and "masked_embed" not in before


def test_centering_is_an_ema_of_the_batch_mean():
    c = Centering(3, momentum=0.9)
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    c.update(x)
    torch.testing.assert_close(c.center, 0.1 * x.mean(0, keepdim=True))
    c.update(x)
    torch.testing.assert_close(c.center, (0.9 * 0.1 + 0.1) * x.mean(0, keepdim=True))
    c.update(x[:0])  # no rows: unchanged
    torch.testing.assert_close(c.center, 0.19 * x.mean(0, keepdim=True))


def test_class_token_loss_matches_a_direct_double_loop():
    torch.manual_seed(0)
    b, k, n_local = 3, 5, 2
    t = torch.randn(2 * b, k)
    s = torch.randn((2 + n_local) * b, k)
    center = torch.randn(1, k)
    got = class_token_loss(t, s, 2, b, center, 0.04, 0.1)
    terms = []
    for i in range(2):
        p = F.softmax((t[i * b : (i + 1) * b] - center) / 0.04, dim=-1)
        for j in range(2 + n_local):
            if i != j:
                q = F.log_softmax(s[j * b : (j + 1) * b] / 0.1, dim=-1)
                terms.append(-(p * q).sum(-1).mean())
    torch.testing.assert_close(got, torch.stack(terms).mean())
    assert len(terms) == 2 * (2 + n_local) - 2
    # centring then sharpening: a teacher that equals the student everywhere still pays the entropy
    same = class_token_loss(s[: 2 * b], s[: 2 * b], 2, b, torch.zeros(1, k), 0.1, 0.1)
    assert same > 0


def test_masked_patch_loss_weights_each_image_equally():
    torch.manual_seed(0)
    mask = torch.tensor([[True, False, False, False], [True, True, True, False], [False] * 4])
    t, s = torch.randn(3, 4, 6), torch.randn(3, 4, 6)  # every patch; only the masked ones count
    center = torch.zeros(1, 6)
    ce = -(F.softmax(t / 0.07, -1) * F.log_softmax(s / 0.1, -1)).sum(-1)  # [3, 4]
    want = (ce[0, 0] / 1 + ce[1, :3].sum() / 3 + 0) / 3  # the unmasked image counts 0
    torch.testing.assert_close(masked_patch_loss(t, s, mask, center, 0.07, 0.1), want)


def test_teacher_temperature_warms_up_linearly_then_stays():
    sched = warmup_constant_schedule(0.04, 0.07, total_steps=10, warmup_steps=4)
    assert sched.shape == (10,)
    assert sched[0] == pytest.approx(0.04) and sched[3] == pytest.approx(0.07) and set(sched[4:]) == {0.07}


def test_multi_crop_shapes_and_seeded_views():
    img = Image.new("RGB", (40, 30), (120, 30, 200))
    t = MultiCropTransform(32, 16, local_crops=3)
    torch.manual_seed(0)
    views = t(img)
    assert views["global"].shape == (2, 3, 32, 32) and views["local"].shape == (3, 3, 16, 16)
    assert views["global"].dtype == torch.float32
    torch.manual_seed(0)
    again = t(img)
    assert torch.equal(again["global"], views["global"]) and torch.equal(again["local"], views["local"])
    assert MultiCropTransform(32, 16, local_crops=0)(img)["local"].shape == (0, 3, 16, 16)


def test_student_forward_shapes():
    torch.manual_seed(0)
    student = Student(SPEC, HEAD)
    g, loc = torch.randn(4, 3, 32, 32), torch.randn(6, 3, 16, 16)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[0, :5] = True
    out = student(g, loc, mask)
    assert out["cls"].shape == (10, 16) and out["patch"].shape == (
        4,
        16,
        16,
    )  # every patch of the global crops
    out["cls"].sum().backward()
    assert student.backbone.blocks[0].attn.qkv.weight.grad is not None


def test_random_patch_masks_counts_and_probability():
    g = torch.Generator().manual_seed(0)
    m = random_patch_masks(2000, 100, mask_prob=0.5, ratio=(0.1, 0.5), generator=g)
    counts = m.sum(1)
    masked = counts > 0
    assert m.dtype == torch.bool and m.shape == (2000, 100)
    assert abs(masked.float().mean().item() - 0.5) < 0.05
    assert counts[masked].min() >= 10 and counts.max() <= 50
    assert math.isclose(counts[masked].float().mean().item(), 30, abs_tol=2)
    none = random_patch_masks(5, 16, 0.0, (0.1, 0.5), torch.Generator().manual_seed(0))
    assert not none.any()
