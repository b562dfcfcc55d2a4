"""The CLI surface: --help on every verb, one-line errors with exit code 2, flags that all map to config fields."""

import argparse
import subprocess
import sys

import pytest

from semmae.cli import build_parser, main
from semmae.errors import UserError


def _leaf_parsers(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaf_parsers(p, path + (name,))


LEAVES = list(_leaf_parsers(build_parser()))


def test_every_verb_of_the_issue_exists():
    paths = {" ".join(p) for p, _ in LEAVES}
    for verb in (
        "data synth",
        "data check",
        "data subset",
        "parts train",
        "parts export",
        "parts show",
        "parts eval",
        "pretrain",
        "linprobe",
        "finetune",
        "knn",
        "compare",
        "export",
        "demo",
        "masks show",
    ):
        assert verb in paths
    assert any(p.startswith("segment") for p in paths)


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_help_on_every_verb(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    assert "usage: semmae" in capsys.readouterr().out


def test_unknown_flag_and_bad_value_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "synth", "--out", "x", "--bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--bogus" in err
    assert main(["data", "synth", "--out", "x", "--size", "big"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--size" in err and "'big'" in err


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_every_flag_maps_to_a_config_field(path):
    """No option is parsed but never read: each flag's dest is a field of the verb's config dataclass."""
    parser = dict(LEAVES)[path]
    cls = parser.get_default("_config_cls")
    if cls is None:
        pytest.skip("verb without a config dataclass (stub)")
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    for action in parser._actions:
        if action.dest in ("help", "config") or isinstance(action, argparse._SubParsersAction):
            continue
        assert action.dest in fields, (
            f"flag {action.option_strings} of `semmae {' '.join(path)}` maps to no field"
        )


def test_config_verbs_reads_every_verb_and_action_off_the_parser():
    import dataclasses

    from semmae.cli import config_verbs

    verbs = config_verbs()
    # top-level verbs and the actions of verb groups, found by walking the parser's sub-commands
    for name in (
        "pretrain",
        "bootstrap",
        "demo",
        "knn",
        "parts train",
        "parts export",
        "data pack",
        "segment eval",
    ):
        assert name in verbs, name
        assert verbs[name].name == name and dataclasses.is_dataclass(verbs[name].config)
        assert callable(verbs[name].handler)
    assert not any(name in verbs for name in ("parts", "data", "segment"))  # groups themselves have no config


# a fresh interpreter runs `semmae ARGV` and reports which heavy modules got imported on the way
HEAVY = ("torch", "timm", "torchvision")
PROBE = f"""
import sys
from semmae.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("imported:", [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["pretrain", "--help"],
        ["parts", "train", "--help"],
        ["segment", "train", "--help"],
        ["pretrain", "--no-such-flag"],
        ["pretrain", "--batch-size", "big"],
        ["knn", "--k", "0", "--data", "x", "--random-init"],
    ],
    ids=" ".join,
)
def test_help_and_usage_errors_import_no_torch(argv):
    """Issue 29: `--help` and a bad flag or value answer without importing torch, timm or torchvision."""
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "imported: []", out.stderr


def test_building_the_parser_imports_no_torch():
    code = "import sys; from semmae.cli import config_verbs; config_verbs(); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    modules = set(eval(out.stdout))
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def _tuple_fields():
    """(verb, field, length) for every fixed-length tuple field of every verb's config."""
    import dataclasses
    import typing

    from semmae.cli import config_verbs
    from semmae.config import _unwrap_optional, fixed_length

    out = []
    for name, verb in sorted(config_verbs().items()):
        hints = typing.get_type_hints(verb.config)
        for f in dataclasses.fields(verb.config):
            length = fixed_length(_unwrap_optional(hints[f.name])[0])
            if length:
                out.append((name, f.name, length))
    return out


TUPLE_FIELDS = _tuple_fields()


def test_the_tuple_fields_of_the_issue_are_found():
    found = {(verb, name) for verb, name, _ in TUPLE_FIELDS}
    for case in (("bootstrap", "global_scale"), ("bootstrap", "mask_ratio"), ("pretrain", "crop_scale")):
        assert case in found
    assert ("bootstrap", "betas") in found and ("pretrain", "betas") in found


@pytest.mark.parametrize("verb,name,length", TUPLE_FIELDS, ids=[f"{v} {n}" for v, n, _ in TUPLE_FIELDS])
@pytest.mark.parametrize("count", ["fewer", "more"])
def test_a_tuple_flag_with_the_wrong_count_is_one_line_exit_2(verb, name, length, count, capsys):
    """Issue 29: `--betas 0.9` or `--crop-scale 0.1 0.5 0.9` is a user error (exit 2, one line naming the flag),
    neither an internal error nor silently accepted; the same through a typed config (stage_config)."""
    from semmae.cli import stage_config
    from semmae.config import field_flag

    values = ["0.5"] * (length - 1 if count == "fewer" else length + 1)
    flag = field_flag(name)
    assert main([*verb.split(), flag, *values]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and f"takes {length} values" in err, err
    with pytest.raises(UserError, match=f"takes {length} values"):
        stage_config(verb, **{name: tuple(float(v) for v in values)})
