"""``semmae compare RUN...``: one table of the results of several runs, mean ± std over seeds.

What a run folder holds, by the verb that wrote it:

* ``results.json`` - ``semmae knn`` / ``linprobe`` / ``finetune`` (``top1``, ``top5``; linprobe also ``best_blr``
  and ``best_on_edge``, finetune ``best_epoch``), ``semmae segment`` (``miou``, ``macc``, ``aacc``);
* no ``results.json`` but online kNN records in ``log.jsonl`` - ``semmae pretrain`` / ``bootstrap`` with
  ``--eval-every``: the last record's ``knn_top1`` / ``knn_top5``.

Seed rule: the nearest component of a run's path (the folder itself, else a parent) named ``<name>-seed<N>``,
``<name>_seed<N>`` or ``seed<N>`` gives the seed; runs whose paths are equal once that component is renamed to
``<name>`` (or dropped, for a bare ``seed<N>``) form one row with their mean and sample standard deviation (n - 1;
none for n = 1). ``runs/mae-seed0`` and ``runs/mae-seed1`` -> row ``mae``, n 2; ``mae-seed0/knn`` and
``mae-seed1/knn`` -> row ``mae/knn``. Rows are named by their path after the longest common parent (and
from the seed-named component on, at the latest). Torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semmae.config import option
from semmae.errors import UserError

SEED = re.compile(r"^(?:(?P<name>.+)[-_])?seed(?P<seed>\d+)$")
# (key, column) in table order; a column shows when any run has the key
METRICS = (
    ("top1", "top-1"),
    ("top5", "top-5"),
    ("knn_top1", "kNN top-1"),
    ("knn_top5", "kNN top-5"),
    ("miou", "mIoU"),
    ("macc", "mAcc"),
    ("aacc", "aAcc"),
)


@dataclass
class CompareConfig:
    """``semmae compare``: runs to tabulate and where to write the table besides stdout."""

    runs: list[str] = option([], "run folders (also as positional RUN...)")
    json: str | None = option(None, "also write the rows as JSON to this file")
    csv: str | None = option(None, "also write the rows as CSV to this file")
    digits: int = option(2, "decimals in the markdown table")

    def validate(self) -> None:
        if not self.runs:
            raise UserError("give the run folders to compare: semmae compare RUN [RUN ...]")
        if not 0 <= self.digits <= 6:
            raise UserError(f"--digits must be 0..6, got {self.digits}")


@dataclass
class RunResult:
    path: Path
    kind: str  # knn | linprobe | finetune | segment | online-knn
    metrics: dict[str, float]
    edge: str | None = None  # linprobe: the best blr's place on its sweep


def read_run(path: str | Path) -> RunResult:
    """The numbers of one run folder (see the module docstring), or a one-line ``UserError``."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run folder {path} does not exist")
    results = path / "results.json"
    if results.is_file():
        data = _load_json(results)
        metrics = {k: float(data[k]) for k, _ in METRICS if isinstance(data.get(k), (int, float))}
        if not metrics:
            raise UserError(f"{results} holds none of {', '.join(k for k, _ in METRICS)}")
        return RunResult(path, _kind(data), metrics, data.get("best_on_edge"))
    log = path / "log.jsonl"
    if log.is_file():
        last = None
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(record, dict) and "knn_top1" in record:
                last = record
        if last is not None:
            metrics = {k: float(last[k]) for k in ("knn_top1", "knn_top5") if last.get(k) is not None}
            return RunResult(path, "online-knn", metrics)
    inner = sorted(
        p.name for p in path.iterdir() if (p / "results.json").is_file() or (p / "log.jsonl").is_file()
    )
    hint = (
        f"; it holds run folders ({', '.join(inner[:3])}{', ...' if len(inner) > 3 else ''}): pass those"
        if inner
        else ""
    )
    raise UserError(
        f"{path} has no results: no results.json (knn, linprobe, finetune, segment) and no online kNN in "
        f"log.jsonl (pretrain --eval-every){hint or '; is the run finished?'}"
    )


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return data


def _kind(data: dict) -> str:
    if "miou" in data:
        return "segment"
    if "best_blr" in data:
        return "linprobe"
    if "best_epoch" in data:
        return "finetune"
    return "knn"


def seed_group(path: Path) -> tuple[tuple[str, ...], int | None, int]:
    """(the path's components with its seed component renamed or dropped, the seed, the index of the row's own
    name in them: the renamed component, the parent of a dropped one, else the last), by the module's rule."""
    parts = list(path.parts)
    for i in range(len(parts) - 1, -1, -1):
        m = SEED.match(parts[i])
        if m:
            name = m.group("name")
            rest = parts[:i] + ([name] if name else []) + parts[i + 1 :]
            return tuple(rest), int(m.group("seed")), i if name else max(i - 1, 0)
    return tuple(parts), None, len(parts) - 1


def compare(runs: list[str | Path]) -> list[dict[str, Any]]:
    """One row per seed group, in the order of first appearance: ``{"run", "kind", "n", "seeds", "paths",
    "metrics": {key: {"mean", "std", "values"}}, "best_on_edge"}``."""
    seen: set[Path] = set()
    groups: dict[tuple[str, ...], list[tuple[int | None, RunResult]]] = {}
    anchors: dict[tuple[str, ...], int] = {}
    for run in runs:
        path = Path(run).absolute()
        if path.resolve() in seen:
            continue  # the same folder given twice (a shell glob and a name) counts once
        seen.add(path.resolve())
        result = read_run(path)
        key, seed, anchor = seed_group(path)
        groups.setdefault(key, []).append((seed, result))
        anchors[key] = anchor
    names = _row_names(anchors)
    rows = []
    for key, members in groups.items():
        kinds = sorted({r.kind for _, r in members})
        if len(kinds) > 1:
            raise UserError(f"runs of row {names[key]} were written by different verbs ({', '.join(kinds)})")
        seeds = [s for s, _ in members if s is not None]
        if len(set(seeds)) < len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise UserError(
                f"row {names[key]} has two runs of seed {twice[0]}: {_paths_of(members, twice[0])}"
            )
        metrics = {}
        for k, _ in METRICS:
            values = [r.metrics[k] for _, r in members if k in r.metrics]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else None
                metrics[k] = {"mean": statistics.fmean(values), "std": std, "values": values}
        edges = [r.edge for _, r in members if r.edge]
        rows.append(
            {
                "run": names[key],
                "kind": kinds[0],
                "n": len(members),
                "seeds": sorted(s for s, _ in members if s is not None),
                "paths": [str(r.path) for _, r in members],
                "metrics": metrics,
                "best_on_edge": edges,
            }
        )
    return rows


def _paths_of(members: list[tuple[int | None, RunResult]], seed: int) -> str:
    return " and ".join(str(r.path) for s, r in members if s == seed)


def _row_names(anchors: dict[tuple[str, ...], int]) -> dict[tuple[str, ...], str]:
    """Each key's components after the longest common leading ones, but from its anchor (the row's own name:
    ``mae`` of ``mae-seed0/knn``) on at the latest."""
    keys = list(anchors)
    common = 0
    while (
        all(len(k) > common + 1 and anchors[k] > common for k in keys) and len({k[common] for k in keys}) == 1
    ):
        common += 1
    return {k: "/".join(k[common:]) for k in keys}


def _cell(m: dict | None, digits: int) -> str:
    if m is None:
        return ""
    if m["std"] is None:
        return f"{m['mean']:.{digits}f}"
    return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    return [(k, title) for k, title in METRICS if any(k in r["metrics"] for r in rows)]


def markdown(rows: list[dict], digits: int = 2) -> str:
    cols = columns(rows)
    lines = [
        "| run | kind | n | " + " | ".join(t for _, t in cols) + " | note |",
        "|---|---|---|" + "---|" * len(cols) + "---|",
    ]
    for r in rows:
        edges = r["best_on_edge"]
        note = (
            f"best blr on the sweep's {'/'.join(sorted(set(edges)))} edge ({len(edges)} of {r['n']})"
            if edges
            else ""
        )
        cells = [_cell(r["metrics"].get(k), digits) for k, _ in cols]
        lines.append(f"| {r['run']} | {r['kind']} | {r['n']} | " + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "kind", "n", "seeds", *(f"{k}_{s}" for k, _ in cols for s in ("mean", "std"))])
    for r in rows:
        values = []
        for k, _ in cols:
            m = r["metrics"].get(k)
            values += ["", ""] if m is None else [repr(m["mean"]), "" if m["std"] is None else repr(m["std"])]
        w.writerow([r["run"], r["kind"], r["n"], " ".join(map(str, r["seeds"])), *values])
    return buf.getvalue()


def run_compare(cfg: CompareConfig) -> list[dict]:
    rows = compare(cfg.runs)
    print(markdown(rows, cfg.digits))
    if cfg.json:
        _write(cfg.json, json.dumps(rows, indent=1, allow_nan=True) + "\n")
    if cfg.csv:
        _write(cfg.csv, to_csv(rows))
    return rows


def _write(path: str, text: str) -> None:
    """Write ``text`` whole or not at all (torch-free, unlike :mod:`semmae.utils.io`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
