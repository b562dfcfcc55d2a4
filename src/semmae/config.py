"""Typed run configurations: dataclass defaults <- YAML file or packaged preset <- command-line flags.

Every command owns one dataclass (``PretrainConfig``, ``PartsTrainConfig``, ...). :func:`add_config_args` turns
its fields into flags (``--batch-size`` for ``batch_size``), so every flag maps to exactly one config field and
nothing is parsed but never read. :func:`resolve_config` merges, validates and returns the dataclass; the run
writes it back with :func:`save_config` so a run directory always records what actually ran.

Field metadata understood here: ``help`` (the flag's help text), ``choices``, and ``checkpoint`` (the value is a
checkpoint file or a run folder; it is resolved to the file, :func:`semmae.utils.io.checkpoint_file`, so the run
records and reports the file it read).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from semmae.errors import UserError
from semmae.utils.io import checkpoint_file

C = TypeVar("C")

PRESET_DIR = Path(__file__).parent / "configs"


def field_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise UserError naming the field."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"'{name}' ({field_flag(name)}) may not be empty")
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError(value)
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if base in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            number = base(value)
            if base is float and not math.isfinite(
                number
            ):  # nan/inf: no knob means them; refuse before step 1
                raise UserError(f"'{name}' ({field_flag(name)}) must be a finite number, got {value!r}")
            return number
        if origin in (list, tuple):
            (inner, *rest) = typing.get_args(base) or (str,)
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, (list, tuple)):
                value = [value]
            length = fixed_length(base)
            if length is not None and len(value) != length:
                raise UserError(
                    f"'{name}' ({field_flag(name)}) takes {length} values, got {len(value)}: "
                    f"{' '.join(map(str, value))}"
                )
            items = [_coerce(v, inner, name) for v in value]
            return tuple(items) if origin is tuple else items
    except (TypeError, ValueError):
        raise UserError(
            f"'{name}' ({field_flag(name)}) expects {getattr(base, '__name__', base)}, got {value!r}"
        ) from None
    return value


def fixed_length(tp: Any) -> int | None:
    """The length of a fixed-length tuple type (``tuple[float, float]`` -> 2); None for lists and
    ``tuple[float, ...]``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is not tuple or not args or args[-1] is Ellipsis:
        return None
    return len(args)


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def add_config_args(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """Add ``--config`` and one flag per dataclass field. Defaults are suppressed so only given flags override."""
    parser.set_defaults(_config_cls=cls)
    parser.add_argument(
        "--config",
        default=None,
        help="YAML file or packaged preset name (e.g. 'pretrain/semmae_vitb16'); flags override it",
    )
    for name, (f, tp) in _fields(cls).items():
        if name in exclude:
            continue
        base, _ = _unwrap_optional(tp)
        help_text = f.metadata.get("help", "")
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        help_text = f"{help_text} (default: {default})" if help_text else f"(default: {default})"
        kwargs: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS, help=help_text)
        if base is bool:
            parser.add_argument(field_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(base) in (list, tuple):
            kwargs["nargs"] = "+"  # a count other than a fixed tuple's length: one line from _coerce
            kwargs["type"] = str
            if fixed_length(base):
                kwargs["help"] = f"{fixed_length(base)} values: {help_text}"
        else:
            kwargs["type"] = str
        if "choices" in f.metadata:
            kwargs["choices"] = list(f.metadata["choices"])
            kwargs["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        parser.add_argument(field_flag(name), **kwargs)


def load_yaml(path_or_preset: str) -> dict[str, Any]:
    """Load a YAML config file, or a packaged preset by name (``pretrain/semmae_vitb16``)."""
    path = Path(path_or_preset)
    if not path.is_file():
        preset = PRESET_DIR / (
            path_or_preset if path_or_preset.endswith(".yaml") else path_or_preset + ".yaml"
        )
        if not preset.is_file():
            raise UserError(
                f"config {path_or_preset!r} is neither a file nor a preset; presets: {', '.join(list_presets())}"
            )
        path = preset
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must hold a mapping of field: value")
    return data


def list_presets() -> list[str]:
    return sorted(str(p.relative_to(PRESET_DIR).with_suffix("")) for p in PRESET_DIR.glob("*/*.yaml"))


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Instantiate ``cls`` from a mapping, coercing types and refusing unknown keys."""
    fields = _fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown {source} key(s) for {cls.__name__}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        f, tp = fields[name]
        value = _coerce(value, tp, name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise UserError(
                f"{field_flag(name)} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        if f.metadata.get("checkpoint") and value:
            value = str(checkpoint_file(value))
        kwargs[name] = value
    cfg = cls(**kwargs)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def resolve_config(cls: type[C], args: argparse.Namespace | dict[str, Any] | None = None) -> C:
    """Defaults <- ``--config`` YAML/preset <- explicitly given flags."""
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    values: dict[str, Any] = {}
    config_path = given.pop("config", None)
    if config_path:
        values.update(load_yaml(config_path))
    field_names = set(_fields(cls))
    values.update({k: v for k, v in given.items() if k in field_names})
    return build_config(cls, values)


def option(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its flag's help text (and e.g. ``choices``): ``x: int = option(3, "what x is")``."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata=dict(help=help, **meta)
        )
    return dataclasses.field(default=default, metadata=dict(help=help, **meta))


def logger_option() -> Any:
    """The ``--logger`` config field of the training verbs."""
    from semmae.utils.trackers import TRACKERS

    return option(
        "tensorboard",
        f"trackers besides log.jsonl, comma-separated: {', '.join(TRACKERS)} (wandb / mlflow: optional "
        "packages, offline modes through their own environment variables); none = log.jsonl only",
    )


def add_verb(
    sub: Any,
    name: str,
    cls: type,
    func: Any,
    help: str,
    description: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A verb (or an action of a verb group): its parser with one flag per field of ``cls`` and its handler
    ``func(cfg) -> exit code``, called on the config the arguments resolve to (:func:`run_on_config`). An
    ``epilog`` keeps its line breaks (examples)."""
    extra = dict(epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter) if epilog else {}
    p = sub.add_parser(name, help=help, description=description or help, **extra)
    add_config_args(p, cls)
    p.set_defaults(func=functools.partial(run_on_config, cls, func))
    return p


def run_on_config(cls: type[C], func: Callable[[C], int | None], args: argparse.Namespace) -> int | None:
    """A verb's handler: ``func`` on the config of ``cls`` that ``args`` resolve to (:func:`resolve_config`)."""
    return func(resolve_config(cls, args))


def add_verb_group(sub: Any, name: str, help: str, description: str | None = None) -> Any:
    """A verb with actions (``semmae parts train``): returns the subparsers to :func:`add_verb` the actions on."""
    p = sub.add_parser(name, help=help, description=description or help)
    actions = p.add_subparsers(dest="action", metavar="<action>", parser_class=type(p))
    actions.required = True
    p.subcommands = actions  # the verb's actions, for semmae.cli.config_verbs
    return actions
