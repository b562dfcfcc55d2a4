"""``semmae <verb>``: a thin dispatcher. Each stage registers its own verbs (``register(subparsers)``) in its
``cli`` module; this file only wires them and turns :class:`UserError` into one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from semmae import __version__
from semmae.errors import UserError

# verb modules, in the order the paper's pipeline runs
VERB_MODULES = (
    "semmae.data.cli",  # data synth | check
    "semmae.bootstrap.cli",  # bootstrap (a self-distilled part encoder)
    "semmae.parts.cli",  # parts train | export | show | eval
    "semmae.masking.cli",  # masks show
    "semmae.engine.cli",  # pretrain, export
    "semmae.eval.cli",  # linprobe, finetune, knn, convert
    "semmae.eval.segmentation.cli",  # segment train | eval
    "semmae.demo.cli",  # demo
)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``semmae pretrain: error: ...``) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="semmae",
        description="SemMAE: semantic part learning, semantic-guided masking, MAE pretraining and evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"semmae {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", parser_class=OneLineErrorParser)
    sub.required = True
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as e:
        command = " ".join(x for x in ("semmae", args.verb, getattr(args, "action", None)) if x)
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semmae {args.verb}: interrupted (checkpoints already written are kept)", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
