"""``semmae <verb>``: a thin dispatcher. Each stage registers its own verbs (``register(subparsers)``) in its
``cli`` module; this file only wires them and turns :class:`UserError` into one line on stderr and exit code 2.

It is also the last guard: a user error raised inside a DataLoader worker, an ``OSError`` (full disk, read-only file
system, no permission) and any other exception become one line; the traceback of an internal error goes to the run
folder's ``error.log`` (``SEMMAE_TRACEBACK=1`` also prints it)."""

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
    command = " ".join(x for x in ("semmae", args.verb, getattr(args, "action", None)) if x)
    from semmae.utils.rundir import forget_last_run_dir

    forget_last_run_dir()  # an internal error's traceback goes to this command's folder, not an earlier one's
    try:
        result = args.func(args)
    except UserError as e:
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semmae {args.verb}: interrupted (checkpoints already written are kept)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last guard: one line, never a traceback on the terminal
        return _last_guard(command, e)
    return int(result or 0)


def _last_guard(command: str, e: Exception) -> int:
    """An exception no verb turned into a :class:`UserError`: a DataLoader worker's user error (one line, exit 2),
    an ``OSError`` (the path and the cause, exit 2), else an internal error: one line on the terminal, exit 1,
    and the traceback in the run folder's ``error.log`` (or a temporary file when there is no run folder)."""
    from semmae.data.loader import user_error_from_worker

    for cause in _chain(e):
        user = user_error_from_worker(cause)
        if user is not None:
            print(f"{command}: error: {user}", file=sys.stderr)
            return 2
    for cause in _chain(e):
        if isinstance(cause, OSError) and cause.strerror:
            print(f"{command}: error: {describe_os_error(cause)}", file=sys.stderr)
            return 2
    where = _write_traceback(e)
    print(
        f"{command}: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
        f"(traceback in {where}; please report it)",
        file=sys.stderr,
    )
    return 1


def describe_os_error(e: OSError) -> str:
    """``<path>: <cause>`` for an OSError (full disk, read-only file system, no permission, ...)."""
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "a file or folder (the system did not say which)"
    return f"{where}: {e.strerror}"


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _write_traceback(e: Exception) -> str:
    import os
    import tempfile
    import time
    import traceback

    from semmae.utils.rundir import last_run_dir

    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} semmae {__version__}\n" + "".join(
        traceback.format_exception(type(e), e, e.__traceback__)
    )
    if os.environ.get("SEMMAE_TRACEBACK"):
        print(text, file=sys.stderr)
    run_dir = getattr(e, "semmae_run_dir", None) or last_run_dir()
    candidates = [run_dir / "error.log"] if run_dir is not None else []
    candidates.append(os.path.join(tempfile.gettempdir(), f"semmae-error-{os.getpid()}.log"))
    for path in candidates:
        try:
            with open(path, "a") as fh:
                fh.write(text + "\n")
            return str(path)
        except OSError:
            continue
    return "nowhere: no writable place; set SEMMAE_TRACEBACK=1 to print it"


if __name__ == "__main__":
    sys.exit(main())
