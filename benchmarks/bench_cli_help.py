"""How fast the CLI answers: median wall time of ``semmae --help`` and ``semmae pretrain --help``, each in a fresh
process (interpreter start, imports, parser, help text), and whether torch was imported on the way.

Issue 29 asks for under 1 s on an idle 2-core machine (every verb used to import torch, timm and torchvision
before argparse ran). Run it on an otherwise idle machine:

    python benchmarks/bench_cli_help.py [--repeats 7] [--smoke]

``--smoke`` (the test suite's): ``semmae --help`` once.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (("--help",), ("pretrain", "--help"), ("pretrain", "--no-such-flag"))
# the console script's body, plus a report of whether torch got imported (printed on stderr after the help)
CHILD = (
    "import atexit, sys; "
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr)); "
    "from semmae.cli import main; sys.exit(main(sys.argv[1:]))"
)


def wall_times(argv: tuple[str, ...], repeats: int) -> tuple[list[float], bool]:
    """Seconds of ``repeats`` fresh runs of ``semmae ARGV``, and whether torch was imported."""
    times, torch_loaded = [], False
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        torch_loaded |= "torch imported: True" in out.stderr
        expected = 2 if "--no-such-flag" in argv else 0  # a broken CLI must not pass for a fast one
        if out.returncode != expected:
            raise SystemExit(f"semmae {' '.join(argv)} exited {out.returncode}:\n{out.stderr[-2000:]}")
    return times, torch_loaded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="`semmae --help` once (the test suite's)")
    args = ap.parse_args()
    commands = COMMANDS[:1] if args.smoke else COMMANDS
    if args.smoke:
        args.repeats = 1
    print("| command | median s | min s | max s | torch imported |\n|---|---|---|---|---|")
    for argv in commands:
        times, torch_loaded = wall_times(argv, args.repeats)
        print(
            f"| `semmae {' '.join(argv)}` | {statistics.median(times):.3f} | {min(times):.3f} | "
            f"{max(times):.3f} | {'yes' if torch_loaded else 'no'} |"
        )


if __name__ == "__main__":
    main()
