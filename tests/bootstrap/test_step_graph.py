"""The bootstrap step reads nothing back from the device (issue 26): the head runs on every patch and the mask
weights the patch loss and the patch centre, with the values the boolean-indexing step (``x[mask]``, kept here as
the slow reference) gave. ``torch.compile(fullgraph=True)`` traces the whole step forward - teacher, student, both
losses and both centre updates - so no graph break, hence no host sync on a GPU; ``torch._dynamo.explain`` agrees.
(``explain`` alone is not enough: a break before the first traced op is not counted.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from semmae.bootstrap.loss import Centering, class_token_loss, masked_patch_loss
from semmae.bootstrap.model import Student, backbone_spec, teacher_from_student
from semmae.bootstrap.train import Bootstrapper
from semmae.bootstrap.views import random_patch_masks
from semmae.engine.precision import resolve_precision
from semmae.models.vit_ops import forward_tokens

SPEC = backbone_spec("vit_micro_patch8", 32)  # a 4 x 4 grid
HEAD = dict(out_dim=16, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)


# ------------------------------------------------------------------- the boolean-indexing step, as it was
def reference_patch_loss(t_masked, s_masked, mask, center, teacher_temp, student_temp):
    """The loss on ``[M, K]`` logits of the masked patches only (``M = mask.sum()``, row-major)."""
    p = F.softmax((t_masked.float() - center) / teacher_temp, dim=-1)
    ce = -(p * F.log_softmax(s_masked.float() / student_temp, dim=-1)).sum(-1)  # [M]
    per_image_count = mask.sum(1).clamp_min(1).to(ce.dtype)  # [N]
    weight = (1.0 / per_image_count).unsqueeze(1).expand_as(mask)[mask]  # [M]
    return (ce * weight).sum() / mask.shape[0]


def reference_centre_update(center, momentum, rows):
    """The centre after one update with the rows ``[M, K]`` (unchanged for ``M = 0``)."""
    if rows.shape[0] == 0:
        return center.clone()
    return center * momentum + rows.float().mean(0, keepdim=True) * (1 - momentum)


def _mask(n: int, length: int, seed: int = 0) -> torch.Tensor:
    m = random_patch_masks(n, length, 0.5, (0.1, 0.5), torch.Generator().manual_seed(seed))
    m[0] = False  # an unmasked image
    m[1, : length // 2] = True  # a masked one, whatever the draw
    return m


def test_masked_patch_loss_equals_the_boolean_index_reference():
    torch.manual_seed(0)
    n, length, k = 6, 49, 32
    mask = _mask(n, length)
    t, s = torch.randn(n, length, k), torch.randn(n, length, k, requires_grad=True)
    center = torch.randn(1, k)
    got = masked_patch_loss(t, s, mask, center, 0.04, 0.1)
    want = reference_patch_loss(t[mask], s[mask], mask, center, 0.04, 0.1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # the unmasked patches get no gradient, the masked ones the reference's
    (g,) = torch.autograd.grad(got, s)
    (g_ref,) = torch.autograd.grad(reference_patch_loss(t[mask], s[mask], mask, center, 0.04, 0.1), s)
    assert not g[~mask].any()
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)
    # nothing masked anywhere: 0, as before
    none = torch.zeros_like(mask)
    assert masked_patch_loss(t, s, none, center, 0.04, 0.1) == 0


def test_weighted_centre_update_is_the_masked_rows_mean():
    torch.manual_seed(0)
    mask = _mask(4, 16)
    x = torch.randn(4, 16, 8)
    c = Centering(8, momentum=0.9)
    c.center.copy_(torch.randn(1, 8))
    want = reference_centre_update(c.center, 0.9, x[mask])
    c.update(x, weight=mask)
    torch.testing.assert_close(c.center, want)
    before = c.center.clone()
    c.update(x, weight=torch.zeros_like(mask))  # no masked patch: unchanged
    assert torch.equal(c.center, before)


def _trainer(ibot: bool, drop_path: float = 0.0):
    torch.manual_seed(0)
    student = Student(SPEC, HEAD, drop_path, masked_embed=ibot)
    cpu = torch.device("cpu")
    return SimpleNamespace(
        cfg=SimpleNamespace(student_temp=0.1, patch_weight=0.5),
        precision=resolve_precision("fp32", cpu),
        teacher=teacher_from_student(student, SPEC, HEAD),
        model=student,
        cls_center=Centering(HEAD["out_dim"], 0.9),
        patch_center=Centering(HEAD["out_dim"], 0.9),
    )


def _views(b: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2 * b, 3, 32, 32, generator=g), torch.randn(2 * b, 3, 16, 16, generator=g)


@pytest.mark.parametrize("ibot", [True, False], ids=["ibot", "dino"])
def test_bootstrap_step_forward_has_no_graph_break(ibot):
    torch._dynamo.reset()
    t = _trainer(ibot, drop_path=0.1)
    globals_, locals_ = _views()
    mask = _mask(globals_.shape[0], 16) if ibot else None

    def step(globals_, locals_, mask):
        return Bootstrapper.forward_step(t, globals_, locals_, mask, 0.04)["loss"]

    report = torch._dynamo.explain(step)(globals_, locals_, mask)
    assert report.graph_break_count == 0 and not report.break_reasons, [
        b.reason.splitlines()[0] for b in report.break_reasons
    ]
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    loss = torch.compile(step, backend=backend, fullgraph=True)(globals_, locals_, mask)  # raises on a break
    assert len(graphs) == 1 and torch.isfinite(loss)
    if ibot:  # the step selects nothing by value
        targets = {str(n.target) for n in graphs[0].graph.nodes if n.op in ("call_function", "call_method")}
        assert not {x for x in targets if "nonzero" in x or "masked_select" in x}, targets


def test_step_forward_equals_the_boolean_index_step():
    """Loss, patch loss and both centres of one step against the step that indexed the masked patches."""
    t = _trainer(ibot=True)
    globals_, locals_ = _views()
    b = globals_.shape[0] // 2
    mask = _mask(2 * b, 16)
    teacher, student = t.teacher, t.model
    with torch.no_grad():
        t_all = teacher(globals_)
        t_masked = teacher.head(t_all["tokens"][mask])  # the old step: the head on the masked patches only
        x = forward_tokens(student.backbone, globals_, mask=mask, mask_token=student.masked_embed)
        s_masked = student.head(x[:, 1:][mask])
        s_cls = student.head(torch.cat([x[:, 0], forward_tokens(student.backbone, locals_)[:, 0]]))
    zero = torch.zeros(1, HEAD["out_dim"])
    want_cls = class_token_loss(t_all["cls"], s_cls, 2, b, zero, 0.04, 0.1)
    want_patch = reference_patch_loss(t_masked, s_masked, mask, zero, 0.04, 0.1)
    want_patch_center = reference_centre_update(zero, 0.9, t_masked)
    want_cls_center = reference_centre_update(zero, 0.9, t_all["cls"])

    out = Bootstrapper.forward_step(t, globals_, locals_, mask, 0.04)
    torch.testing.assert_close(out["cls"], want_cls)
    torch.testing.assert_close(out["patch"], want_patch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], want_cls + 0.5 * want_patch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t.patch_center.center, want_patch_center, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(t.cls_center.center, want_cls_center)
