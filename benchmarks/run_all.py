"""Run every benchmark and print one table of ratios measured side by side in this run.

A ``benchmarks/bench_*.py`` that exposes ``run(quick: bool, smoke: bool) -> list[dict]`` (rows with keys ``name``,
``value``, ``unit`` and ``target``, a string such as ``"<= 3x"`` or ``""``) is run here; the others are standalone
scripts (their own command line) and are listed as such. Timings inside a benchmark are medians of repeats, and a
ratio compares two things measured in the same process on the same inputs: these machines are noisy, so read
ratios, not absolute seconds.

Usage::

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # small sizes
    python benchmarks/run_all.py --only masking pretrain --out benchmarks/results/run_all-<date>.md
    python benchmarks/run_all.py --smoke --only masking   # the test suite's: every benchmark imported and
                                                          # checked for run(smoke=...), the chosen ones run at it
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import inspect
import sys
import time
import traceback
from pathlib import Path

from semmae_lab.results_table import machine_description, markdown_table

HERE = Path(__file__).resolve().parent


def discover() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def runner(module):
    """The module's ``run`` if ``run_all`` can call it (it takes ``quick``), else None (a standalone script)."""
    fn = getattr(module, "run", None)
    return fn if callable(fn) and "quick" in inspect.signature(fn).parameters else None


def format_table(rows: list[dict]) -> str:
    cells = [[r["bench"], r["name"], r["value"], r.get("unit", ""), r.get("target", "")] for r in rows]
    return markdown_table(["benchmark", "measurement", "value", "unit", "target"], cells, digits=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="import every benchmark (a runnable one must take smoke=); run the chosen ones at their smoke sizes",
    )
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
    rows, failures, standalone = [], [], []
    for name in benches if args.smoke else chosen:  # a smoke run imports every benchmark
        t0 = time.perf_counter()
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        try:
            fn = runner(load(benches[name]))
            if fn is None:
                standalone.append(name)
            elif args.smoke and "smoke" not in inspect.signature(fn).parameters:
                raise TypeError(f"bench_{name}.py: run() takes no smoke=; give it a smoke size")
            elif name in chosen:
                kwargs = {"smoke": True} if args.smoke else {}
                for r in fn(quick=args.quick, **kwargs):
                    rows.append({"bench": name, **r})
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failures.append(name)
            traceback.print_exc()
        print(f"[run_all] {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    header = f"# semmae benchmarks, {dt.date.today()} ({size})\n\nMachine: {machine_description()}\n"
    table = format_table(rows)
    if standalone:
        table += f"\n\nStandalone (own command line, not run here): {', '.join(standalone)}"
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
