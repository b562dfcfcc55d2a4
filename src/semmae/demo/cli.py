"""CLI verb `semmae demo` (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError(f"semmae {args.verb} is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("demo", help="The whole paper end to end on the built-in synthetic dataset, with a report", description="The whole paper end to end on the built-in synthetic dataset, with a report")
    p.set_defaults(func=_not_yet)
