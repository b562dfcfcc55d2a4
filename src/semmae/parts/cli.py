"""CLI verbs of this stage: `semmae parts ...` (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError("semmae parts {} is not implemented yet".format(args.action))


def register(sub) -> None:
    p = sub.add_parser("parts", help="Semantic part learning (paper Sec. 3.1, Eq. 1-7)", description="Semantic part learning (paper Sec. 3.1, Eq. 1-7)")
    actions = p.add_subparsers(dest="action", metavar="<action>")
    actions.required = True
    a = actions.add_parser("train", help="Train part tokens + decoder on a frozen encoder (Sec. 3.1)", description="Train part tokens + decoder on a frozen encoder (Sec. 3.1)")
    a.set_defaults(func=_not_yet)
    a = actions.add_parser("export", help="Write the part-map cache for a dataset", description="Write the part-map cache for a dataset")
    a.set_defaults(func=_not_yet)
    a = actions.add_parser("show", help="Draw part overlays next to raw-attention parts", description="Draw part overlays next to raw-attention parts")
    a.set_defaults(func=_not_yet)
    a = actions.add_parser("eval", help="Score parts against ground-truth masks or keypoints", description="Score parts against ground-truth masks or keypoints")
    a.set_defaults(func=_not_yet)
