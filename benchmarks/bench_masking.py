"""Semantic-guided masking (Algorithm 1) vs MAE's random masking, same batch, same device, one process.

B = 256 images, L = 196 patches (14 x 14), 6 parts + the "no part" id; median wall time of repeats.
Target: semantic <= 3x random (the official per-batch implementation measures ~22x here).

    python benchmarks/bench_masking.py [--quick | --smoke]

``--smoke`` (the test suite's): B = 8, two repeats on the CPU, seconds.
"""

from __future__ import annotations

import argparse

import torch

from semmae.masking import random_mask, semantic_guided_mask
from semmae_lab.results_table import row
from semmae_lab.timing import median_times


def run(quick: bool = False, device: str | None = None, smoke: bool = False) -> list[dict]:
    dev = torch.device(device or ("cpu" if smoke or not torch.cuda.is_available() else "cuda"))
    batch, length, parts = 8 if smoke else 256, 196, 6
    repeats = 2 if smoke else 20 if quick else 200
    g = torch.Generator(device=dev).manual_seed(0)
    part_ids = torch.randint(0, parts + 1, (batch, length), device=dev, generator=g)  # id 6 = no part
    alpha = 0.5

    t_sem, t_rand = median_times(
        [
            lambda: semantic_guided_mask(part_ids, 0.75, alpha, g, no_part_id=parts),
            lambda: random_mask(batch, length, 0.75, g, dev),
        ],
        repeats,
        dev,
    )
    tag = f"B={batch} L={length} {parts} parts, {dev.type}"
    return [
        row(f"masking: semantic-guided time ({tag})", t_sem * 1e3, "ms"),
        row(f"masking: random time ({tag})", t_rand * 1e3, "ms"),
        row(f"masking: semantic / random time ({tag})", t_sem / t_rand, "x", "<= 3x"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite's)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    args = parser.parse_args()
    for row in run(args.quick, args.device, args.smoke):
        print(f"{row['name']:<70} {row['value']:10.3f} {row['unit']:<3} {row['target']}")
