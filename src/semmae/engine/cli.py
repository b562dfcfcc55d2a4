"""CLI verbs `semmae pretrain` and `semmae export` (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError(f"semmae {args.verb} is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="MAE / SemMAE pretraining (torchrun for many GPUs)", description="MAE / SemMAE pretraining (torchrun for many GPUs)")
    p.set_defaults(func=_not_yet)
    p = sub.add_parser("export", help="Export a pretrained encoder as a timm ViT safetensors file", description="Export a pretrained encoder as a timm ViT safetensors file")
    p.set_defaults(func=_not_yet)
