"""The package's import graph, read from the source (ast, nothing imported): the foundations (``utils``, ``models``,
``engine``, and what they stand on) never import a stage above them, and no module imports itself through others
(no import circle, counting every import: lazy ones inside functions and those only for type checking too); and the
library never imports the experiment package beside the benchmarks (``benchmarks/semmae_lab``, issue 41)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: the layers a foundation may import: everything at or below it
FOUNDATIONS = {
    "errors": set(),
    "utils": {"errors"},
    "config": {"errors", "utils"},
    "data": {"errors", "utils", "config"},
    "masking": {"errors", "utils", "config", "data"},
    "models": {"errors", "utils", "config", "data", "masking"},
    "engine": {"errors", "utils", "config", "data", "masking", "models"},
}
#: upward imports left, each with its reason (none since issue 27); the test fails when one is gone (drop it here) or
#: a new one appears
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def module_imports(src: Path = SRC, type_checking: bool = False) -> dict[str, set[str]]:
    """``{module: the semmae modules it imports}`` (``from pkg import name`` counts as ``pkg.name`` when that is a
    module, else as ``pkg``); the imports under ``if TYPE_CHECKING:`` count only with ``type_checking``."""
    files = {}
    for path in sorted((src / "semmae").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        files[name] = (path, is_pkg)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = set() if type_checking else _type_checking_only(tree)
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in files else base)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "semmae"


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    out = set()
    for module, targets in graph.items():
        allowed = FOUNDATIONS.get(layer(module))
        if allowed is None:
            continue  # a stage (parts, eval, bootstrap, demo, the CLI) may import anything below it
        for target in targets:
            if layer(target) != layer(module) and layer(target) not in allowed and target != "semmae":
                out.add((module, target))
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def cycle_path(graph: dict[str, set[str]], modules: list[str]) -> list[str]:
    """One import circle through the first of ``modules`` (a strongly connected component), first module repeated
    at the end: the shortest way back to it (breadth first)."""
    start, inside = modules[0], set(modules)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise ValueError(f"{modules} is not a circle")


def test_foundations_import_no_stage_above_them():
    found = upward_imports(module_imports())
    assert found - KNOWN_UPWARD == set(), "new upward imports"
    assert KNOWN_UPWARD - found == set(), "fixed: drop these from KNOWN_UPWARD"


def test_no_import_circles():
    """Type-only imports count: a circle hidden behind ``if TYPE_CHECKING:`` and a lazy import is still two modules
    that need each other (issue 41)."""
    graph = module_imports(type_checking=True)
    circles = [" -> ".join(cycle_path(graph, comp)) for comp in import_cycles(graph)]
    assert circles == [], "import circles:\n  " + "\n  ".join(circles)


def lab_imports(src: Path = SRC) -> list[str]:
    """``module: line`` of every import of ``semmae_lab`` under ``src`` (lazy and type-only ones too)."""
    found = []
    for path in sorted((src / "semmae").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(n == "semmae_lab" or n.startswith("semmae_lab.") for n in names):
                found.append(f"{path.relative_to(src)}:{node.lineno}")
    return found


def test_the_library_never_imports_the_lab():
    """The harness, the campaigns, their reports and the timing helpers live beside the benchmarks
    (``benchmarks/semmae_lab``), not in the installed package; nothing there chains experiments any more."""
    assert lab_imports() == []
    pipeline = SRC / "semmae" / "pipeline"
    assert not pipeline.exists() or not any(pipeline.rglob("*.py")), "semmae.pipeline is gone (issue 41)"
    for name in ("engine/bench.py", "utils/timing.py", "utils/results_table.py"):
        assert not (SRC / "semmae" / name).exists(), f"{name} belongs to the lab"


def test_the_lab_scan_finds_lazy_imports(tmp_path):
    (tmp_path / "semmae").mkdir()
    (tmp_path / "semmae" / "a.py").write_text("def f():\n    from semmae_lab.harness import Harness\n")
    (tmp_path / "semmae" / "b.py").write_text("import semmae_labels\nfrom . import semmae_lab\n")
    assert lab_imports(tmp_path) == ["semmae/a.py:2"]


def test_the_scan_finds_upward_imports_and_circles(tmp_path):
    pkg = tmp_path / "semmae"
    for sub in ("models", "parts"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "mae.py").write_text("def f():\n    from semmae.parts.encoder import g\n")
    (pkg / "parts" / "encoder.py").write_text("from semmae.parts import train\n")
    (pkg / "parts" / "train.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from semmae.models import mae\n"
        "from semmae.parts.encoder import g\n"
    )
    graph = module_imports(tmp_path)
    assert upward_imports(graph) == {("semmae.models.mae", "semmae.parts.encoder")}
    assert import_cycles(graph) == [["semmae.parts.encoder", "semmae.parts.train"]]
    assert cycle_path(graph, ["semmae.parts.encoder", "semmae.parts.train"]) == [
        "semmae.parts.encoder",
        "semmae.parts.train",
        "semmae.parts.encoder",
    ]
    everything = module_imports(
        tmp_path, type_checking=True
    )  # train -> mae (type only) -> encoder (lazy) -> train
    assert import_cycles(everything) == [["semmae.models.mae", "semmae.parts.encoder", "semmae.parts.train"]]
    assert cycle_path(everything, ["semmae.models.mae", "semmae.parts.encoder", "semmae.parts.train"]) == [
        "semmae.models.mae",
        "semmae.parts.encoder",
        "semmae.parts.train",
        "semmae.models.mae",
    ]
