"""Student and EMA teacher of the self-distillation bootstrap (DINO, Caron et al. 2021; iBOT, Zhou et al. 2022).

* Backbone: a timm ``VisionTransformer`` (``num_classes=0``, learned positions, ``dynamic_img_size`` so the
  local crops reuse the global position table, interpolated) in one of the project's sizes
  (:mod:`semmae.models.registry`). Its state dict *is* the encoder layout every loader of this package accepts,
  so the teacher's backbone is saved as is (``docs/bootstrap.md``).
* Head: DINO/iBOT's projection head - a 3-layer MLP to a bottleneck, L2 normalisation, then a weight-normalised
  linear layer onto ``K`` prototypes. iBOT's ViT-S shares one head between the class token and the patch tokens.
* Student: backbone + head + iBOT's learnable ``masked_embed`` token that replaces masked patch embeddings. The
  teacher is a copy of backbone + head without drop path, updated only by :func:`ema_update_`.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from semmae.errors import UserError
from semmae.models.encoder_record import EncoderRecord
from semmae.models.vit_ops import forward_tokens

_MODEL_RE = re.compile(r"^vit_([a-z]+)_patch(\d+)$")
_SPEC_FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


def backbone_spec(model: str, img_size: int, **overrides: int) -> dict:
    """Plain-data architecture of ``vit_<size>_patch<p>`` from the project's registry, with overrides applied.

    Returns ``{"name", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"}``.
    """
    from semmae.models.registry import list_models, model_config

    m = _MODEL_RE.match(model)
    sizes = sorted({n.split("_")[2] for n in list_models()})
    if not m:
        raise UserError(
            f"--model {model!r}: expected vit_<size>_patch<p> with size one of {', '.join(sizes)}"
        )
    registered = f"mae_{model}"
    if registered not in list_models():
        size = m.group(1)
        if size not in sizes:
            raise UserError(f"--model {model}: unknown size {size!r}; sizes: {', '.join(sizes)}")
        registered = next(n for n in list_models() if n.startswith(f"mae_vit_{size}_patch"))
        overrides = {"patch_size": int(m.group(2)), **overrides}
    c = model_config(registered, img_size=img_size, **overrides)
    return {"name": model, **{k: getattr(c, k) for k in _SPEC_FIELDS}}


def build_backbone(spec: dict, drop_path: float = 0.0) -> VisionTransformer:
    """A timm ViT (class token, learned positions, no classifier) that accepts any multiple of the patch size."""
    return EncoderRecord.from_mae_config(spec).build(drop_path, dynamic_img_size=True)


class ProjectionHead(nn.Module):
    """MLP (Linear-GELU-Linear-GELU-Linear) -> L2 normalise -> weight-normalised prototypes.

    ``forward`` maps ``[..., D]`` to ``[..., K]`` logits. The prototype layer's rows are ``g * v / ||v||``; with
    ``norm_last_layer`` the gain ``g`` stays 1 (DINO's default), else it is learned (iBOT's ViT-S setting).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, norm_last_layer: bool
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.kaiming_uniform_(self.last_v, a=math.sqrt(5))  # nn.Linear's default
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.last_v, self.last_g) if p.requires_grad]

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, self.last_g * F.normalize(self.last_v, dim=-1))


class Teacher(nn.Module):
    """Backbone + head; ``forward(globals)`` -> ``{"cls": [B, K], "tokens": [B, L, D]}`` (patch tokens before the
    head: the caller projects them only when the masked-patch loss needs them)."""

    def __init__(self, spec: dict, head_args: dict, drop_path: float = 0.0):
        super().__init__()
        self.backbone = build_backbone(spec, drop_path)
        self.head = ProjectionHead(spec["embed_dim"], **head_args)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = forward_tokens(self.backbone, images)
        return {"cls": self.head(x[:, 0]), "tokens": x[:, 1:]}

    @torch.no_grad()
    def forward_encoder_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Class token ``[B, D]`` and patch tokens ``[B, L, D]`` (the online kNN's view)."""
        x = forward_tokens(self.backbone, images)
        return x[:, 0], x[:, 1:]


class Student(Teacher):
    """Teacher's architecture + iBOT's ``masked_embed`` (DINO: none); one ``forward`` for every crop (one DDP
    call per step).

    ``forward(globals [2B, 3, S, S], locals [nB, 3, s, s] | None, mask bool [2B, L] | None)`` returns
    ``{"cls": [2B + nB, K]`` (global crops first), ``"patch": [2B, L, K]`` (every patch of the global crops, the
    masked ones seeing ``masked_embed``; only with a mask)}``. The head runs on all patches, as in iBOT's reference
    code: selecting the masked ones would give a shape that depends on the mask's values (a host sync).
    """

    def __init__(self, spec: dict, head_args: dict, drop_path: float = 0.0, masked_embed: bool = True):
        super().__init__(spec, head_args, drop_path)
        # only with masks: a parameter that never gets a gradient would stall DDP
        self.masked_embed = nn.Parameter(torch.zeros(1, 1, spec["embed_dim"])) if masked_embed else None

    def forward(
        self, images: Tensor, local_images: Tensor | None = None, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        # iBOT: the masked patches' embeddings are replaced by masked_embed before the positions are added
        x = forward_tokens(self.backbone, images, mask=mask, mask_token=self.masked_embed)
        cls = [x[:, 0]]
        if local_images is not None:
            cls.append(forward_tokens(self.backbone, local_images)[:, 0])
        out = {"cls": self.head(torch.cat(cls))}
        if mask is not None:
            out["patch"] = self.head(x[:, 1:])
        return out

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"backbone.cls_token", "backbone.pos_embed", "masked_embed"}


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``t <- m * t + (1 - m) * s`` for every teacher parameter (matched by name; ``masked_embed`` has none)."""
    s_params = dict(student.named_parameters())
    t_list, s_list = [], []
    for name, p in teacher.named_parameters():
        t_list.append(p)
        s_list.append(s_params[name].detach())
    torch._foreach_mul_(t_list, momentum)
    torch._foreach_add_(t_list, s_list, alpha=1.0 - momentum)


def teacher_from_student(student: Student, spec: dict, head_args: dict) -> Teacher:
    """A frozen teacher (no drop path) with the student's current weights."""
    teacher = Teacher(spec, head_args)
    state = {k: v for k, v in student.state_dict().items() if k != "masked_embed"}
    teacher.load_state_dict(state, strict=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
