"""OpenMP wait policy on a CPU: one MAE training step with OMP_WAIT_POLICY unset (libgomp's default: threads spin
while waiting) vs PASSIVE (threads sleep), each in a fresh process (the policy is read when torch loads), timed
in alternating turns, medians over repeats.

`benchmarks/repro.py` sets PASSIVE because on a shared machine spinning threads of several torch processes starve
each other; this measures what that costs (or gains) when the process has the machine to itself. Run it on an
otherwise idle machine:

    python benchmarks/bench_omp_wait.py [--steps 15] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from semmae.models import create_model
torch.manual_seed(0)
steps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
# the anchor's model: tiny ViT width 192, depth 12, patch 8, 64 px, decoder 128 x 4, batch 128, 75 % random masking
model = create_model("mae_vit_tiny_patch8", img_size=64, decoder_embed_dim=128, decoder_depth=4).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
imgs = torch.randn(128, 3, 64, 64)
L = model.num_patches
def step():
    noise = torch.rand(imgs.shape[0], L)
    mask = noise.argsort(1).argsort(1) >= int(L * 0.25)
    loss = model(imgs, mask)["loss"]
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(2): step()
t = time.perf_counter()
for _ in range(steps): step()
print(json.dumps({"img_per_s": steps * imgs.shape[0] / (time.perf_counter() - t)}))
"""


def measure(policy: str | None, steps: int, threads: int) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps), str(threads)], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"child failed ({policy}): {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["img_per_s"]


def compare(steps: int, repeats: int, threads: int) -> dict[str, list[float]]:
    """img/s of each policy, ``repeats`` fresh processes each, in alternating turns."""
    runs: dict[str, list[float]] = {"default (spin)": [], "PASSIVE": []}
    for _ in range(repeats):
        runs["default (spin)"].append(measure(None, steps, threads))
        runs["PASSIVE"].append(measure("PASSIVE", steps, threads))
    return runs


def run(quick: bool = False, device: str | None = None) -> list[dict]:
    """run_all.py entry: PASSIVE / default step throughput (CPU only; a GPU run skips it)."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu":
        return []
    runs = compare(5 if quick else 15, 1 if quick else 3, os.cpu_count() or 1)
    ratio = statistics.median(runs["PASSIVE"]) / statistics.median(runs["default (spin)"])
    return [
        {
            "name": "MAE step img/s, OMP_WAIT_POLICY=PASSIVE / default (idle CPU)",
            "value": ratio,
            "unit": "x",
            "target": "",
        }
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    runs = compare(args.steps, args.repeats, args.threads)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(
        f"MAE step, tiny ViT depth 12 at 64 px, batch 128, {args.threads} threads, {args.repeats} alternating runs"
    )
    print("| OMP_WAIT_POLICY | img/s (median) | runs |")
    print("|---|---|---|")
    for k, v in runs.items():
        print(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    print(f"ratio PASSIVE / default = {med['PASSIVE'] / med['default (spin)']:.3f}")


if __name__ == "__main__":
    main()
