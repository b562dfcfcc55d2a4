"""Run every benchmark and print one table of ratios measured side by side in this run.

Each ``benchmarks/bench_*.py`` exposes ``run(quick: bool) -> list[dict]`` with keys ``name``, ``value``, ``unit``
and ``target`` (a string such as ``"<= 3x"`` or ``""``). Timings inside a benchmark are medians of repeats, and a
ratio compares two things measured in the same process on the same inputs: these machines are noisy, so read
ratios, not absolute seconds.

Usage::

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # small sizes (a smoke run)
    python benchmarks/run_all.py --only masking pretrain --out benchmarks/results/run_all-<date>.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import sys
import time
import traceback
from pathlib import Path

from semmae.utils.results_table import machine_description, markdown_table

HERE = Path(__file__).resolve().parent


def discover() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def format_table(rows: list[dict]) -> str:
    cells = [[r["bench"], r["name"], r["value"], r.get("unit", ""), r.get("target", "")] for r in rows]
    return markdown_table(["benchmark", "measurement", "value", "unit", "target"], cells, digits=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every benchmark")
    ap.add_argument(
        "--only", nargs="+", default=None, help=f"benchmarks to run (of: {', '.join(discover())})"
    )
    ap.add_argument("--out", default=None, help="also write the table as markdown to this file")
    args = ap.parse_args(argv)
    benches = discover()
    chosen = args.only or list(benches)
    unknown = sorted(set(chosen) - set(benches))
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    rows, failures = [], []
    for name in chosen:
        t0 = time.perf_counter()
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        try:
            for r in load(benches[name]).run(quick=args.quick):
                rows.append({"bench": name, **r})
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failures.append(name)
            traceback.print_exc()
        print(f"[run_all] {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    header = f"# semmae benchmarks, {dt.date.today()} ({'quick' if args.quick else 'full'})\n\nMachine: {machine_description()}\n"
    table = format_table(rows)
    print(header)
    print(table)
    if failures:
        print(f"\nFAILED: {', '.join(failures)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            header + "\n" + table + ("\n\nFAILED: " + ", ".join(failures) if failures else "") + "\n"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
