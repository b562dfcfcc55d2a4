"""The CLI surface: --help on every verb, one-line errors with exit code 2, flags that all map to config fields."""

import argparse

import pytest

from semmae.cli import build_parser, main


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
