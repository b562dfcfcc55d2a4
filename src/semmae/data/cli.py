"""CLI verbs of this stage: `semmae data ...` (stub: filled in by its issue)."""

from __future__ import annotations

from semmae.errors import UserError


def _not_yet(args):
    raise UserError("semmae data {} is not implemented yet".format(args.action))


def register(sub) -> None:
    p = sub.add_parser("data", help="Datasets: generate the synthetic part set, check a folder", description="Datasets: generate the synthetic part set, check a folder")
    actions = p.add_subparsers(dest="action", metavar="<action>")
    actions.required = True
    a = actions.add_parser("synth", help="Write the synthetic part dataset (ImageFolder + ground-truth part masks)", description="Write the synthetic part dataset (ImageFolder + ground-truth part masks)")
    a.set_defaults(func=_not_yet)
    a = actions.add_parser("check", help="Scan an image dataset for unreadable files before a long run", description="Scan an image dataset for unreadable files before a long run")
    a.set_defaults(func=_not_yet)
