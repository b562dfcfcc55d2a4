"""The packed crop's resample: one ``interpolate`` per box (the old GPU path) vs the batched matmuls, on the CPU.

Same boxes (``BatchPartAugment.params``, crop-flip, scale 0.2..1), same noise images, one process, the paths timed
in turns (median of ``--repeats``). Also printed: non-view ATen ops dispatched per batch (on a GPU each is about
one kernel launch, the cost the batched path removes), the largest difference between the two float paths (uint8
levels), and the CPU's own path (per-box uint8 kernel, unchanged) for scale. On a CPU the batched path does
``side / taps`` times the multiply-adds of the banded filter, so its CPU time says little about a GPU, where the
launches dominate; ``gpu_validate.py``'s ``augment`` section measures it there.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_batch_augment.py [--repeats 7] [--smoke]

``--smoke`` (the test suite's): one tiny case (:data:`SMOKE_CASE`), one turn.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from semmae.data.batch_augment import BatchPartAugment, crops_one_by_one, resized_crops
from semmae_lab.results_table import row
from semmae_lab.timing import median_times

# (batch, pack side, output side): ViT-B pretraining from a 256 px pack; the test suite's micro model at two batches
CASES = ((64, 256, 224), (64, 40, 32), (256, 40, 32))
SMOKE_CASE = (4, 40, 32)


class CountOps(TorchDispatchMode):
    """Counts the ATen ops that compute (views launch nothing)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def ops_of(fn) -> int:
    with CountOps() as counter:
        fn()
    return counter.count


def measure(batch: int, side: int, size: int, repeats: int) -> list[dict]:
    """One case's rows: time, ops and differences of each path on the same boxes and noise images."""
    g = torch.Generator().manual_seed(side)
    pixels = torch.randint(0, 256, (batch, side, side, 3), dtype=torch.uint8, generator=g)
    x = pixels.permute(0, 3, 1, 2)  # as BatchPartAugment.images sees it: channels-last uint8
    aug = BatchPartAugment(size, 8, side, scale=(0.2, 1.0))
    boxes, _ = aug.params(torch.tensor([[375, 500]] * batch), g)
    paths = {
        "per box, float (old GPU path)": lambda: crops_one_by_one(x.float(), boxes, size),
        "batched, float (new GPU path)": lambda: resized_crops(x.float(), boxes, size),
        "per box, uint8 (CPU path)": lambda: crops_one_by_one(x, boxes, size),
    }
    times = median_times(list(paths.values()), repeats, torch.device("cpu"), warmup=1)
    old, new, cpu = (fn() for fn in paths.values())
    diff = {"new vs old": (new - old).abs().max().item(), "new vs CPU path": (new - cpu).abs().max().item()}
    case = f"B={batch}, {side} -> {size} px"
    return [
        dict(case=case, path=name, ms=t * 1e3, ops=ops_of(fn), diff=diff)
        for (name, fn), t in zip(paths.items(), times)
    ]


def run(quick: bool = False, repeats: int | None = None, smoke: bool = False) -> list[dict]:
    """``run_all.py``'s rows: per case, each path's time and ops, old / new, and the largest difference."""
    rows = []
    for case in (SMOKE_CASE,) if smoke else CASES[1:] if quick else CASES:
        paths = measure(*case, repeats or (1 if smoke else 3 if quick else 7))
        tag = paths[0]["case"]
        for r in paths:
            rows += [
                row(f"{tag}: {r['path']}: time", r["ms"], "ms"),
                row(f"{tag}: {r['path']}: ATen ops", r["ops"]),
            ]
        old, new = paths[0], paths[1]
        rows.append(row(f"{tag}: old / new time", old["ms"] / new["ms"], "x"))
        rows.append(row(f"{tag}: old / new ops", old["ops"] / new["ops"], "x", ">= 2"))
        rows += [row(f"{tag}: largest difference, {k}", v, "uint8 levels") for k, v in old["diff"].items()]
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="one tiny case, one turn (the test suite's)")
    args = ap.parse_args(argv)
    cases = CASES
    if args.smoke:
        cases, args.repeats = (SMOKE_CASE,), 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median of {args.repeats} turns\n")
    print("| case | path | ms / batch | ATen ops / batch | old / this (time) | old / this (ops) |")
    print("|---|---|---|---|---|---|")
    diffs = {}
    for case in cases:
        paths = measure(*case, args.repeats)
        old = paths[0]
        for r in paths:
            print(
                f"| {r['case']} | {r['path']} | {r['ms']:.1f} | {r['ops']} | {old['ms'] / r['ms']:.2f}x "
                f"| {old['ops'] / r['ops']:.2f}x |"
            )
        diffs[old["case"]] = old["diff"]
    print("\nLargest difference, uint8 levels (0..255), noise images:")
    for case, diff in diffs.items():
        print(f"- {case}: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))


if __name__ == "__main__":
    main()
