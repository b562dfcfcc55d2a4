"""Compare the numbers two run trees logged: did a change alter what the stages compute?

For every ``log.jsonl``, ``results.json`` and ``*metrics*.json`` under ``A`` it reads the same file under ``B`` and
counts the numeric fields that are equal to the bit, those that differ and the largest relative difference.
Timings and memory are left out. Used for issue 16 (the training-kit refactor must not change results):

    python benchmarks/compare_runs.py runs/before runs/after
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    files = [p for pat in ("log.jsonl", "results.json", "*metrics*.json") for p in sorted(args.a.rglob(pat))]
    print("| file | equal to the bit | differ | largest relative difference |\n|---|---|---|---|")
    for fa in files:
        rel = fa.relative_to(args.a)
        fb = args.b / rel
        if not fb.is_file():
            print(f"| {rel} | missing in {args.b} | | |")
            continue
        r = compare_file(fa, fb)
        note = (
            f" (records {r['records'][0]} vs {r['records'][1]})" if r["records"][0] != r["records"][1] else ""
        )
        print(f"| {rel}{note} | {r['exact']} | {r['differ']} | {r['max_rel']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
