"""CLI verbs of this stage: `semmae masks ...` (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError(f"semmae masks {args.action} is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser(
        "masks",
        help="Semantic-guided masking (Algorithm 1)",
        description="Semantic-guided masking (Algorithm 1)",
    )
    actions = p.add_subparsers(dest="action", metavar="<action>")
    actions.required = True
    a = actions.add_parser(
        "show",
        help="Draw masks along the alpha schedule (paper Fig. 1 and 3)",
        description="Draw masks along the alpha schedule (paper Fig. 1 and 3)",
    )
    a.set_defaults(func=_not_yet)
