"""Compare the numbers two run trees logged: did a change alter what the stages compute?

For every ``log.jsonl``, ``results.json`` and ``*metrics*.json`` under ``A`` it reads the same file under ``B`` and
counts the numeric fields that are equal to the bit, those that differ and the largest relative difference.
Timings and memory are left out. Used for issue 16 (the training-kit refactor must not change results):

    python benchmarks/compare_runs.py runs/before runs/after

``--smoke`` (the test suite's): two small made-up run trees in a temporary folder (one number differs, one file is
missing in B), compared.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NOT_RESULTS = {"img_per_s", "memory_mb", "data_wait"}  # speed and memory, not what was computed


def _records(path: Path) -> list[dict]:
    if path.name == "log.jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(path.read_text())]


def _numbers(record: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in record.items():
        if key in NOT_RESULTS or "time" in key or key.endswith("_s"):
            continue
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield prefix + key, value


def compare_file(a: Path, b: Path) -> dict[str, Any]:
    """``{"exact", "differ", "max_rel", "missing", "records"}`` of one file pair."""
    ra, rb = _records(a), _records(b)
    out: dict[str, Any] = {
        "exact": 0,
        "differ": 0,
        "max_rel": 0.0,
        "missing": set(),
        "records": (len(ra), len(rb)),
    }
    for x, y in zip(ra, rb):
        ny = dict(_numbers(y))
        for key, v in _numbers(x):
            if key not in ny:
                out["missing"].add(key)
                continue
            w = ny[key]
            if v == w or (math.isnan(v) and math.isnan(w)):
                out["exact"] += 1
            else:
                out["differ"] += 1
                out["max_rel"] = max(out["max_rel"], abs(v - w) / max(abs(v), 1e-12))
    return out


def smoke_trees(root: Path) -> tuple[Path, Path]:
    """Two run trees under ``root`` for ``--smoke``: the same log and results but for one loss and a file B lacks."""
    for tree, loss in (("a", 0.5), ("b", 0.25)):
        run = root / tree / "run"
        run.mkdir(parents=True)
        log = [{"step": 1, "loss": 1.0, "img_per_s": 10.0}, {"step": 2, "loss": loss, "time": 3.0}]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        (run / "results.json").write_text(json.dumps({"top1": 50.0, "per_blr": {"0.1": 40.0}}))
    (root / "a" / "run" / "part_metrics.json").write_text(json.dumps({"nmi": 0.3}))
    return root / "a", root / "b"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, nargs="?")
    ap.add_argument("b", type=Path, nargs="?")
    ap.add_argument("--smoke", action="store_true", help="compare two made-up trees (the test suite's)")
    args = ap.parse_args(argv)
    if args.smoke:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return compare_trees(*smoke_trees(Path(tmp)))
    if args.b is None:
        ap.error("the run trees A and B are required")
    return compare_trees(args.a, args.b)


def compare_trees(a: Path, b: Path) -> int:
    """The table of every result file under ``a`` against the same file under ``b``, on stdout."""
    files = [p for pat in ("log.jsonl", "results.json", "*metrics*.json") for p in sorted(a.rglob(pat))]
    print("| file | equal to the bit | differ | largest relative difference |\n|---|---|---|---|")
    for fa in files:
        rel = fa.relative_to(a)
        fb = b / rel
        if not fb.is_file():
            print(f"| {rel} | missing in {b} | | |")
            continue
        r = compare_file(fa, fb)
        note = (
            f" (records {r['records'][0]} vs {r['records'][1]})" if r["records"][0] != r["records"][1] else ""
        )
        print(f"| {rel}{note} | {r['exact']} | {r['differ']} | {r['max_rel']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
