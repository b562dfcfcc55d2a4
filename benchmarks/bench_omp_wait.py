"""OpenMP wait policy on a CPU: one MAE training step with OMP_WAIT_POLICY unset (libgomp's default: threads spin
while waiting) vs PASSIVE (threads sleep), each in a fresh process (the policy is read when torch loads), timed
in alternating turns, medians over repeats.

`benchmarks/repro.py` sets PASSIVE because on a shared machine spinning threads of several torch processes starve
each other; this measures what that costs (or gains) when the process has the machine to itself. Run it on an
otherwise idle machine:

    python benchmarks/bench_omp_wait.py [--steps 15] [--repeats 3] [--threads 2]

``--contention`` measures what the ``semmae`` CLI chooses (``semmae.utils.threads``): the same step idle and with a
second busy process (one core spinning in pure Python), for the CLI's default (its rule, as ``semmae.cli.main``
applies it before torch loads) and each policy forced, torch's default thread count; the ratio busy / idle per
setting (issue 29's target: at most 1.3x slower with the default settings):

    python benchmarks/bench_omp_wait.py --contention --steps 8 --repeats 2

``--smoke`` (the test suite's; with either mode): one step of batch 2, one round, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from semmae_lab.results_table import markdown_table, row

CHILD = r"""
import json, os, sys, time
if os.environ.get("BENCH_SEMMAE_RULE"):
    from semmae.utils.threads import apply_wait_policy
    apply_wait_policy()  # what semmae.cli.main does first
import torch
from semmae.models import create_model
torch.manual_seed(0)
steps, threads, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads > 0:
    torch.set_num_threads(threads)
# the anchor's model: tiny ViT width 192, depth 12, patch 8, 64 px, decoder 128 x 4, batch 128, 75 % random masking
model = create_model("mae_vit_tiny_patch8", img_size=64, decoder_embed_dim=128, decoder_depth=4).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
imgs = torch.randn(batch, 3, 64, 64)
L = model.num_patches
def step():
    noise = torch.rand(imgs.shape[0], L)
    mask = noise.argsort(1).argsort(1) >= int(L * 0.25)
    loss = model(imgs, mask)["loss"]
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(2): step()
t = time.perf_counter()
for _ in range(steps): step()
print(json.dumps({"img_per_s": steps * imgs.shape[0] / (time.perf_counter() - t),
                  "policy": os.environ.get("OMP_WAIT_POLICY", "unset"), "threads": torch.get_num_threads()}))
"""
BUSY = "while True: pass"  # one core kept busy, as another user's job would


def measure_record(
    policy: str | None,
    steps: int,
    threads: int,
    semmae_rule: bool = False,
    batch: int = 128,
    timeout: float = 600,
) -> dict:
    """One fresh process: ``policy`` forced (None: unset), or with ``semmae_rule`` the CLI's choice; img/s 0 when
    it runs past ``timeout`` seconds."""
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "SEMMAE_OMP_WAIT", "BENCH_SEMMAE_RULE"):
        env.pop(key, None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    if semmae_rule:
        env["BENCH_SEMMAE_RULE"] = "1"
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(steps), str(threads), str(batch)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"img_per_s": 0.0, "policy": f"{policy or 'unset'} (timed out)", "threads": threads}
    if out.returncode:
        raise SystemExit(f"child failed ({policy}): {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SETTINGS = {  # name -> (forced policy, apply the CLI's rule)
    "semmae default (rule)": (None, True),
    "unset (OpenMP default)": (None, False),
    "PASSIVE": ("PASSIVE", False),
    "ACTIVE": ("ACTIVE", False),
}


def contention(
    steps: int, repeats: int, threads: int = 0, batch: int = 128, timeout: float = 600
) -> dict[str, dict[str, list[dict]]]:
    """``{setting: {"idle": [...], "busy": [...]}}``: img/s records, idle and beside one busy process, settings
    in alternating turns (``threads`` 0: torch's default count)."""
    runs: dict[str, dict[str, list[dict]]] = {k: {"idle": [], "busy": []} for k in SETTINGS}
    for _ in range(repeats):
        for state in ("idle", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if state == "busy" else None
            try:
                for name, (policy, rule) in SETTINGS.items():
                    record = measure_record(policy, steps, threads, rule, batch, timeout)
                    record["load"] = os.getloadavg()[0]
                    runs[name][state].append(record)
                    print(name, state, json.dumps(record), file=sys.stderr, flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return runs


CONTENTION_COLUMNS = [
    "setting",
    "policy set",
    "idle img/s (median)",
    "busy img/s (median)",
    "busy / idle time",
]
CONTENTION_COLUMNS += ["runs idle; busy"]


def contention_table(runs: dict[str, dict[str, list[dict]]]) -> str:
    """Medians of the runs that finished; a run past the timeout shows as "t/o" and counts as slower than all."""

    def med(records: list[dict]) -> float:
        done = [x["img_per_s"] for x in records if x["img_per_s"] > 0]
        if len(done) * 2 <= len(records):  # half or more timed out: the median is a timeout
            return 0.0
        return statistics.median(done + [0.0] * (len(records) - len(done)))

    def fmt(v: float) -> str:
        return f"{v:.1f}" if v > 0 else "t/o"

    rows = []
    for name, r in runs.items():
        idle, busy = med(r["idle"]), med(r["busy"])
        ratio = f"**{idle / busy:.2f}x**" if idle > 0 and busy > 0 else "n/a (timed out)"
        runs_text = "; ".join(", ".join(fmt(x["img_per_s"]) for x in r[state]) for state in ("idle", "busy"))
        policy = r["idle"][0]["policy"].replace(" (timed out)", "")
        rows.append([name, policy, fmt(idle), fmt(busy), ratio, runs_text])
    return markdown_table(CONTENTION_COLUMNS, rows)


def compare(steps: int, repeats: int, threads: int, batch: int = 128) -> dict[str, list[float]]:
    """img/s of each policy, ``repeats`` fresh processes each, in alternating turns."""
    runs: dict[str, list[float]] = {"default (spin)": [], "PASSIVE": []}
    for _ in range(repeats):
        runs["default (spin)"].append(measure_record(None, steps, threads, batch=batch)["img_per_s"])
        runs["PASSIVE"].append(measure_record("PASSIVE", steps, threads, batch=batch)["img_per_s"])
    return runs


def run(quick: bool = False, device: str | None = None, smoke: bool = False) -> list[dict]:
    """run_all.py entry: PASSIVE / default step throughput (CPU only; a GPU run skips it)."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() and not smoke else "cpu")) != "cpu":
        return []
    if smoke:
        runs = compare(1, 1, 1, batch=2)
    else:
        runs = compare(5 if quick else 15, 1 if quick else 3, os.cpu_count() or 1)
    ratio = statistics.median(runs["PASSIVE"]) / statistics.median(runs["default (spin)"])
    return [row("MAE step img/s, OMP_WAIT_POLICY=PASSIVE / default (idle CPU)", ratio, "x")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--contention", action="store_true", help="idle vs one busy process, per setting")
    ap.add_argument("--batch", type=int, default=128, help="images per step")
    ap.add_argument("--timeout", type=float, default=600, help="--contention: seconds per child process")
    ap.add_argument("--smoke", action="store_true", help="one step of batch 2, one round (the test suite's)")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.repeats, args.threads, args.batch = 1, 1, 1, 2
    if args.contention:
        print(
            f"MAE step, tiny ViT depth 12 at 64 px, batch {args.batch}, torch's default threads, {os.cpu_count()} cores, "
            f"{args.repeats} alternating rounds of {args.steps} steps, load average before: {os.getloadavg()[0]:.2f}"
        )
        print(contention_table(contention(args.steps, args.repeats, 0, args.batch, args.timeout)))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    runs = compare(args.steps, args.repeats, args.threads, args.batch)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(
        f"MAE step, tiny ViT depth 12 at 64 px, batch {args.batch}, {args.threads} threads, "
        f"{args.repeats} alternating runs"
    )
    rows = [[k, f"{med[k]:.1f}", ", ".join(f"{x:.1f}" for x in v)] for k, v in runs.items()]
    print(markdown_table(["OMP_WAIT_POLICY", "img/s (median)", "runs"], rows))
    print(f"ratio PASSIVE / default = {med['PASSIVE'] / med['default (spin)']:.3f}")


if __name__ == "__main__":
    main()
