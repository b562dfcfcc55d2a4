"""Pipelines chain stages through typed configs (``semmae.cli.stage_config`` / ``run_stage``), never through argv
(issue 16): no module of the package and no benchmark builds flag lists for another stage, parses them back, or
runs ``semmae`` in a subprocess (issue 27)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: the benchmarks that chain stages
PIPELINE_SCRIPTS = ("repro", "campaign", "bootstrap_compare", "parts_cub", "parts_synthetic")
PACKAGE = sorted((REPO / "src" / "semmae").rglob("*.py"))
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))
#: the pipelines that chain stages: not even a flag literal for a stage
PIPELINES = (
    sorted((REPO / "src" / "semmae" / "demo").glob("*.py"))
    + sorted((REPO / "src" / "semmae" / "pipeline").glob("*.py"))
    + [REPO / "benchmarks" / f"{name}.py" for name in PIPELINE_SCRIPTS]
)
FLAG = re.compile(r"^--?[a-z][a-z0-9-]*$")  # a bare flag such as "--gamma" (messages have spaces)
STRING_METHODS = ("split", "rsplit", "startswith", "endswith", "replace", "removesuffix", "removeprefix")
VERB_FROM_ARGV = ("main", "parse_args", "run_verb")


def verb_calls_from_argv(tree: ast.AST) -> list[str]:
    """Calls that hand a list to the CLI's ``main``, to ``parse_args`` or to a ``run_verb``: a verb run from argv."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in VERB_FROM_ARGV and any(
                isinstance(a, (ast.List, ast.Tuple, ast.ListComp, ast.BinOp)) for a in node.args
            ):
                out.append(f"{node.lineno}: {name}([...]) runs a verb from argv")
    return out


def semmae_subprocesses(tree: ast.AST) -> list[str]:
    """Command lists naming ``semmae.cli`` or ``semmae`` (``[python, "-m", "semmae.cli", verb, ...]``): a stage run
    as a subprocess from argv."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and any(
            isinstance(e, ast.Constant) and e.value in ("semmae.cli", "semmae") for e in node.elts
        ):
            out.append(f"{node.lineno}: a command line running semmae")
    return out


def flag_literals(tree: ast.AST) -> list[str]:
    """Bare flag literals, except a script declaring its own options (``add_argument``), f-string pieces, ``git``
    command lines and string-method arguments (``key.rsplit("-seed", 1)``)."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            allowed |= {id(a) for a in node.args}
        if isinstance(node, ast.JoinedStr):
            allowed |= {id(v) for v in node.values}
        if isinstance(node, ast.List) and node.elts and getattr(node.elts[0], "value", None) == "git":
            allowed |= {id(e) for e in node.elts}
        if (
            isinstance(node, ast.Call) and getattr(node.func, "id", None) == "git"
        ):  # a git(...) helper's arguments
            allowed |= {id(a) for a in node.args}
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in STRING_METHODS:
            allowed |= {id(a) for a in node.args}
    return [
        f"{node.lineno}: flag literal {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and FLAG.match(node.value)
        and id(node) not in allowed
    ]


def argv_smells(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    smells = verb_calls_from_argv(tree) + semmae_subprocesses(tree)
    smells += flag_literals(tree) if path in PIPELINES else []
    return [f"{path.name}:{s}" for s in smells]


def test_the_scan_finds_argv_chaining():
    tree = ast.parse('from semmae.cli import main\nmain(["pretrain", "--gamma", "2"])\n')
    smells = verb_calls_from_argv(tree) + flag_literals(tree)
    assert any("'--gamma'" in s for s in smells) and any("main([...])" in s for s in smells)
    tree = ast.parse('subprocess.run([sys.executable, "-m", "semmae.cli", "knn"])\n')
    assert semmae_subprocesses(tree) == ["1: a command line running semmae"]


@pytest.mark.parametrize(
    "path", sorted(set(PACKAGE + BENCHMARKS + PIPELINES)), ids=lambda p: str(p.relative_to(REPO))
)
def test_no_stage_is_called_through_argv(path):
    assert argv_smells(path) == []
