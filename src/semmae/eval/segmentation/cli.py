"""CLI verb `semmae segment` (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError(f"semmae {args.verb} is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("segment", help="Semantic segmentation transfer with UPerNet (paper Table 7)", description="Semantic segmentation transfer with UPerNet (paper Table 7)")
    p.set_defaults(func=_not_yet)
