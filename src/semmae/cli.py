"""``semmae <verb>``: a thin dispatcher. Each stage registers its own verbs (``register(subparsers)``) in its
``cli`` module; this file only wires them and turns :class:`UserError` into one line on stderr and exit code 2.

The parser is built without torch, timm or torchvision (``semmae --help`` answers in a fraction of a second): a
verb's config dataclass and the choices it offers live in modules that import none of them (``<stage>/config.py``),
and a handler gets its resolved config (``semmae.config.add_verb``) and imports the heavy modules only then.

It is also the last guard: a user error raised inside a DataLoader worker, an ``OSError`` (full disk, read-only file
system, no permission) and any other exception become one line; the traceback of an internal error goes to the run
folder's ``error.log`` (``SEMMAE_TRACEBACK=1`` also prints it).

Pipelines that chain stages (``semmae demo``, ``benchmarks/repro.py``) take the same road in-process with typed
configs: :func:`stage_config` resolves a verb's config as the CLI does (defaults <- preset <- values) and
:func:`run_stage` runs the verb's handler on it - the function ``semmae <verb>`` calls - with no argv in between;
:func:`guard` is the exit-code wrapping of :func:`main` for a script's own entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

from semmae import __version__
from semmae.errors import UserError

# verb modules, in the order the paper's pipeline runs
VERB_MODULES = (
    "semmae.data.cli",  # data synth | check
    "semmae.bootstrap.cli",  # bootstrap (a self-distilled part encoder)
    "semmae.parts.cli",  # parts train | export | show | eval
    "semmae.masking.cli",  # masks show
    "semmae.engine.cli",  # pretrain
    "semmae.export.cli",  # export (an encoder, or a part learner)
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
    parser.subcommands = sub  # read by config_verbs (argparse keeps its sub-commands private)
    sub.required = True
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from semmae.utils.threads import apply_wait_policy

    reason = (
        apply_wait_policy()
    )  # before anything imports torch: OpenMP reads OMP_WAIT_POLICY once, when it loads
    if reason.endswith(": ignored"):  # a SEMMAE_OMP_WAIT value that is not one of the choices
        print(f"semmae: warning: {reason}", file=sys.stderr, flush=True)
    args = build_parser().parse_args(argv)
    command = " ".join(x for x in ("semmae", args.verb, getattr(args, "action", None)) if x)
    from semmae.utils.io import forget_expected_outputs
    from semmae.utils.rundir import forget_last_run_dir

    forget_expected_outputs()
    forget_last_run_dir()  # an internal error's traceback goes to this command's folder, not an earlier one's
    return guard(command, lambda: _dispatch(args))


def guard(command: str, call: Callable[[], int | None]) -> int:
    """Run ``call`` as the CLI runs a verb and return the exit code: its own (0 for None), 2 with one line for a
    user error (also one raised in a DataLoader worker, or an ``OSError``), 130 when interrupted (Ctrl-C, or
    SIGTERM: what a scheduler sends, to the loader's workers too), else 1 with one line and the traceback in the run
    folder's ``error.log``. SIGTERM outside a training loop raises ``KeyboardInterrupt``
    (:func:`semmae.engine.termination.interrupting_sigterm`); a training loop stops at a step with a checkpoint."""
    from semmae.engine.termination import interrupting_sigterm, sigterm_explains, sigterm_received

    with interrupting_sigterm():
        try:
            return int(call() or 0)
        except UserError as e:
            print(f"{command}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return _interrupted(command, sigterm_received())
        except Exception as e:  # noqa: BLE001 - the last guard: one line, never a traceback on the terminal
            if sigterm_explains(e):  # a loader's worker died of the SIGTERM that stops this command
                return _interrupted(command, True)
            return _last_guard(command, e)


def _interrupted(command: str, sigterm: bool) -> int:
    how = " by SIGTERM" if sigterm else ""
    print(f"{command}: interrupted{how} (checkpoints already written are kept)", file=sys.stderr)
    return 130


def _dispatch(args: argparse.Namespace) -> int:
    """The verb's handler on parsed (or typed, :func:`run_stage`) arguments: resolve the config, run the stage."""
    return int(args.func(args) or 0)


# ------------------------------------------------------------------------------- stages chained in one process
@dataclasses.dataclass(frozen=True)
class Verb:
    """A verb whose flags are a config dataclass (``semmae.config.add_config_args``) and the handler it runs."""

    name: str  # "pretrain", "parts export", ...
    config: type
    handler: Callable[[argparse.Namespace], int | None]


@functools.lru_cache(maxsize=1)
def config_verbs() -> dict[str, Verb]:
    """Every verb with a typed config, read off the CLI parser itself (so there is no second table to drift)."""
    verbs: dict[str, Verb] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subcommands = getattr(parser, "subcommands", None)  # set where the sub-parsers are made
        for name, sub in (subcommands.choices if subcommands is not None else {}).items():
            walk(sub, (*path, name))
        config, handler = parser.get_default("_config_cls"), parser.get_default("func")
        if path and config is not None and handler is not None:
            verbs[" ".join(path)] = Verb(" ".join(path), config, handler)

    walk(build_parser(), ())
    return verbs


def _verb(name: str) -> Verb:
    verbs = config_verbs()
    if name not in verbs:
        raise KeyError(f"no config verb {name!r}; verbs: {', '.join(sorted(verbs))}")
    return verbs[name]


def stage_config(verb: str, preset: str | None = None, **values: Any) -> Any:
    """The config of ``semmae <verb>`` as the CLI resolves it: defaults <- ``preset`` (a packaged preset or YAML
    file, as ``--config``) <- ``values`` (typed field values, checked like flags). Derive variants with
    ``dataclasses.replace``; :func:`run_stage` checks them again."""
    from semmae.config import resolve_config

    return resolve_config(_verb(verb).config, {"config": preset, **values})


def run_stage(verb: str, cfg: Any) -> None:
    """Run ``semmae <verb>`` in this process on its typed config ``cfg``: the handler the CLI calls, which checks
    the config as for flags (types, choices, ``validate()``) and runs the stage. No argv is built. Errors
    propagate so that a pipeline can name the stage that failed (an internal error carries the stage's run folder,
    where :func:`guard` writes its traceback); a non-zero exit code becomes a :class:`UserError`."""
    v = _verb(verb)
    if type(cfg) is not v.config:
        raise TypeError(f"semmae {verb} takes a {v.config.__name__}, got {type(cfg).__name__}")
    names = verb.split()
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    args = argparse.Namespace(
        verb=names[0],
        action=names[1] if len(names) > 1 else None,
        func=v.handler,
        _config_cls=v.config,
        **values,
    )
    code = _dispatch(args)
    if code:
        raise UserError(f"semmae {verb} exited with code {code}")


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
    # the innermost run folder an exception passed through (a pipeline's stage inside the pipeline's folder)
    tagged = [c.semmae_run_dir for c in _chain(e) if getattr(c, "semmae_run_dir", None) is not None]
    run_dir = tagged[-1] if tagged else last_run_dir()
    candidates = [run_dir / "error.log"] if run_dir is not None else []
    candidates.append(os.path.join(tempfile.gettempdir(), f"semmae-error-{os.getpid()}.log"))
    from semmae.utils.io import open_for_append
    from semmae.utils.ownership import note_after_run

    for path in candidates:
        new = not os.path.lexists(path)
        try:
            with open_for_append(path) as fh:
                fh.write(text + "\n")
        except OSError:
            continue
        if new and run_dir is not None and str(path) == str(run_dir / "error.log"):
            note_after_run(run_dir, "error.log")  # semmae made it: --overwrite may delete it (never a user's)
        return str(path)
    return "nowhere: no writable place; set SEMMAE_TRACEBACK=1 to print it"


if __name__ == "__main__":
    sys.exit(main())
