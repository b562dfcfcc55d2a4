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

Odd numbers: a metric that is NaN or infinite (``NaN``/``Infinity`` in the JSON, or ``1e400``) is kept as a value
but left out of the row's mean and std, which are over its finite values only; the table shows the non-finite
values where no finite one is left (``nan``, ``inf``) and a note (``top-1 non-finite in 1 of 3 (nan), not
averaged``). An integer too large for a float (``400`` digits) is refused in one line naming the file and the key,
as is a ``results.json`` / ``log.jsonl`` that cannot be read or is not UTF-8 text. A value that is not a number
(a string, ``true``, ``null``) is not a metric.

Output files: ``--json`` writes ``{"written_by": "semmae compare", "format": 1, "rows": [...], "semmae_sha256"}``
(strict JSON: a non-finite mean, std or value is ``null``; ``non_finite`` counts them per metric), ``--csv`` a
table whose header starts ``run,kind,n,seeds`` (an empty mean / std where there is none) and whose last line is
its seal, ``# semmae_sha256 <hex>`` (read it with ``pandas.read_csv(path, comment="#")``). Both are checked before
either is written (:func:`semmae.utils.ownership.check_output_file`: never a file of a run given, nor one inside
any folder semmae owns or a live run; an existing file only with ``--overwrite`` and only if an earlier ``semmae
compare`` wrote it, as its ``written_by`` / header says, and it is still as written: its seal holds,
:mod:`semmae.utils.content_seal`) and written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semmae.config import option
from semmae.errors import UserError
from semmae.utils.content_seal import csv_file_sealed, json_file_sealed, sealed_csv, sealed_json

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
    overwrite: bool = option(
        False, "replace a --json / --csv file that an earlier semmae compare wrote (never any other file)"
    )

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
        metrics = _metrics(results, data, [k for k, _ in METRICS])
        if not metrics:
            raise UserError(f"{results} holds none of {', '.join(k for k, _ in METRICS)}")
        edge = data.get("best_on_edge")
        return RunResult(path, _kind(data), metrics, edge if isinstance(edge, str) else None)
    log = path / "log.jsonl"
    if log.is_file():
        last = None
        for line in _read_text(log).splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut short by a crash
            if isinstance(record, dict) and "knn_top1" in record:
                last = record
        if last is not None:
            metrics = _metrics(log, last, ["knn_top1", "knn_top5"])
            if metrics:
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


def _metrics(path: Path, record: dict, keys: list[str]) -> dict[str, float]:
    """The numbers under ``keys`` in ``record`` (read from ``path``) as floats, NaN and infinities included; a value
    that is not a number (a string, a bool, ``null``) is skipped, an integer too large for a float refused."""
    out = {}
    for k in keys:
        v = record.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        try:
            out[k] = float(v)
        except OverflowError:
            raise UserError(
                f"{path}: {k} is an integer of {len(str(abs(v)))} digits, too large for a float; not a metric"
            ) from None
    return out


def _read_text(path: Path) -> str:
    """``path``'s text, or a one-line ``UserError`` naming it when it cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); is it a semmae file?"
        ) from None


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(_read_text(path))
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise UserError(f"{path} is not valid JSON (nested too deeply)") from None
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
                metrics[k] = _summary(values)
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


def _summary(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std", "values", "non_finite"}``: mean and sample std of the finite values (``None`` where there
    are none, std also for one), all values, and how many of them are NaN or infinite."""
    finite = [v for v in values if math.isfinite(v)]
    mean = statistics.mean(finite) if finite else None  # exact (fmean overflows on sums past the float range)
    std = None
    if len(finite) > 1:
        try:
            std = statistics.stdev(finite)
        except OverflowError:
            std = math.inf
    return {"mean": mean, "std": std, "values": values, "non_finite": len(values) - len(finite)}


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


def _num(v: float, digits: int) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else str(v)


def _cell(m: dict | None, digits: int) -> str:
    if m is None:
        return ""
    if m["mean"] is None:  # no finite value: show what there is
        return "/".join(sorted({str(v) for v in m["values"]}))
    if m["std"] is None:
        return _num(m["mean"], digits)
    return f"{_num(m['mean'], digits)} ± {_num(m['std'], digits)}"


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    return [(k, title) for k, title in METRICS if any(k in r["metrics"] for r in rows)]


def _note(row: dict) -> str:
    notes = []
    edges = row["best_on_edge"]
    if edges:
        notes.append(
            f"best blr on the sweep's {'/'.join(sorted(set(edges)))} edge ({len(edges)} of {row['n']})"
        )
    for k, title in METRICS:
        m = row["metrics"].get(k)
        if m and m["non_finite"]:
            odd = "/".join(sorted({str(v) for v in m["values"] if not math.isfinite(v)}))
            notes.append(
                f"{title} non-finite in {m['non_finite']} of {len(m['values'])} ({odd}), not averaged"
            )
    return "; ".join(notes)


def markdown(rows: list[dict], digits: int = 2) -> str:
    cols = columns(rows)
    lines = [
        "| run | kind | n | " + " | ".join(t for _, t in cols) + " | note |",
        "|---|---|---|" + "---|" * len(cols) + "---|",
    ]
    for r in rows:
        cells = [_cell(r["metrics"].get(k), digits) for k, _ in cols]
        lines.append(f"| {r['run']} | {r['kind']} | {r['n']} | " + " | ".join(cells) + f" | {_note(r)} |")
    return "\n".join(lines)


#: the first cells of the header of compare's CSV: how ``--overwrite`` recognises a file compare wrote
CSV_HEADER = ("run", "kind", "n", "seeds")
#: ``written_by`` of compare's JSON file: how ``--overwrite`` recognises a file compare wrote
WRITTEN_BY = "semmae compare"
JSON_FORMAT = 1


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV: ``run,kind,n,seeds``, then ``<key>_mean,<key>_std`` per column (empty where none)."""
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_HEADER, *(f"{k}_{s}" for k, _ in cols for s in ("mean", "std"))])
    for r in rows:
        values = []
        for k, _ in cols:
            m = r["metrics"].get(k) or {}
            values += ["" if m.get(s) is None else repr(m[s]) for s in ("mean", "std")]
        w.writerow([r["run"], r["kind"], r["n"], " ".join(map(str, r["seeds"])), *values])
    return sealed_csv(buf.getvalue())


def to_json(rows: list[dict]) -> str:
    """The rows as compare's JSON file: ``{"written_by", "format", "rows"}``, strict JSON (non-finite -> null)."""
    doc = {"written_by": WRITTEN_BY, "format": JSON_FORMAT, "rows": _finite_or_null(rows)}
    return json.dumps(sealed_json(doc), indent=1, allow_nan=False) + "\n"


def _finite_or_null(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a JSON file that ``semmae compare --json`` wrote, or a one-line ``UserError``."""
    path = Path(path)
    data = _load_json(path)
    if data.get("written_by") != WRITTEN_BY or not isinstance(data.get("rows"), list):
        raise UserError(f"{path} was not written by semmae compare --json")
    return data["rows"]


def _json_by_compare(path: Path) -> bool:
    """A JSON file compare wrote, as it wrote it (its seal holds: :mod:`semmae.utils.content_seal`)."""
    doc = json_file_sealed(path)
    return doc is not None and doc.get("written_by") == WRITTEN_BY


def _csv_by_compare(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096).decode("utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return False
    header = ",".join(CSV_HEADER)
    return (first == header or first.startswith(header + ",")) and csv_file_sealed(path)


def check_outputs(cfg: CompareConfig) -> list[tuple[Path, str]]:
    """The ``--json`` / ``--csv`` files to write, as ``(path, "json" | "csv")``, each checked by the ownership rule
    (see the module docstring) before either is written; a one-line ``UserError`` for the first refused."""
    from semmae.utils.ownership import check_output_file, input_conflict

    wanted = [(f, v, k) for f, v, k in (("--json", cfg.json, "json"), ("--csv", cfg.csv, "csv")) if v]
    if len(wanted) == 2 and _same_file(wanted[0][1], wanted[1][1]):
        raise UserError(f"--json {cfg.json} and --csv {cfg.csv} name the same file: give two names")
    inputs = {f"RUN {i}" if len(cfg.runs) > 1 else "RUN": str(r) for i, r in enumerate(cfg.runs, 1)}
    out = []
    for flag, value, kind in wanted:
        for run in cfg.runs:  # named as the run folder it is (check_output_file below only numbers them)
            why = input_conflict(value, {"run folder": str(run)})
            if why:
                raise UserError(
                    f"{flag} {value} {why}, which compare reads; semmae never replaces its inputs"
                )
        recognise = _json_by_compare if kind == "json" else _csv_by_compare
        path = check_output_file(
            value, overwrite=cfg.overwrite, inputs=inputs, written_by_semmae=recognise, flag=flag
        )
        out.append((path, kind))
    return out


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def run_compare(cfg: CompareConfig) -> list[dict]:
    rows = compare(cfg.runs)
    outputs = check_outputs(cfg)  # both checked before anything is printed or written
    print(markdown(rows, cfg.digits))
    from semmae.utils.io import atomic_write_text  # torch-free

    for path, kind in outputs:
        atomic_write_text(path, to_json(rows) if kind == "json" else to_csv(rows))
    return rows
