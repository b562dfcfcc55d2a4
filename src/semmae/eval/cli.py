"""CLI verbs of evaluation (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError(f"semmae {args.verb} is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("linprobe", help="Linear probe on a frozen encoder (MAE protocol)", description="Linear probe on a frozen encoder (MAE protocol)")
    p.set_defaults(func=_not_yet)
    p = sub.add_parser("finetune", help="Fine-tune an encoder (MAE recipe)", description="Fine-tune an encoder (MAE recipe)")
    p.set_defaults(func=_not_yet)
    p = sub.add_parser("knn", help="k-NN accuracy on frozen features", description="k-NN accuracy on frozen features")
    p.set_defaults(func=_not_yet)
    p = sub.add_parser("convert", help="Convert CUB / Stanford Cars / iNaturalist releases to ImageFolder trees", description="Convert CUB / Stanford Cars / iNaturalist releases to ImageFolder trees")
    p.set_defaults(func=_not_yet)
