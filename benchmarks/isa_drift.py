"""Does a run's arithmetic depend on the CPU's vector instructions? (issue 40: reproducibility across machines)

PyTorch picks its CPU kernels by the machine's instruction set (``ATEN_CPU_CAPABILITY``: ``default`` = scalar,
``avx2``, ``avx512``). A campaign resumed on another machine runs the same seed on other kernels; where a kernel
rounds differently, the run drifts by an ulp and, training being chaotic, ends elsewhere. This script trains the
same run (a run folder's ``config.yaml``) for ``--steps`` steps once per capability, each in a fresh process, for
each ``--masking``, and compares the logged losses with the first capability's, step by step.

    python benchmarks/isa_drift.py --config RUN/config.yaml --steps 40 --masking random adaptive --out DIR

Prints and writes ``DIR/isa-drift.md``: per masking and capability, the first logged step whose loss differs,
the largest loss difference, and the largest difference of the final weights (the logged loss can agree to the
last bit while the weights have drifted). ``--smoke``: a tiny generated run, 4 steps, ``default`` against the machine's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_capability() -> str:
    """The capability torch dispatches to on this machine (``AVX512``, ``AVX2``, ``DEFAULT``), lower-cased."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


#: the child: ``semmae pretrain``'s typed config from the run's config.yaml and the overrides, run in-process there
#: (a fresh interpreter, because torch reads ATEN_CPU_CAPABILITY once, at import)
CHILD = """
import json, sys
from semmae.cli import run_stage, stage_config
spec = json.loads(sys.argv[1])
run_stage("pretrain", stage_config("pretrain", preset=spec.pop("preset"), **spec))
"""


def train(
    config: Path, out: Path, steps: int, capability: str, masking: str | None
) -> list[tuple[int, float]]:
    """The run of ``config`` (a config.yaml) for ``steps`` steps in a fresh process on ``capability``'s kernels;
    the ``(step, loss)`` pairs of its log."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONPATH": str(ROOT / "src")}
    spec = {"preset": str(config), "out": str(out), "max_steps": steps, "logger": "none"}
    spec |= {"masking": masking} if masking else {}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"isa_drift: the run on {capability} failed:\n{done.stderr.strip()[-2000:]}")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def compare(base: list[tuple[int, float]], other: list[tuple[int, float]]) -> tuple[int | None, float]:
    """The first step whose loss differs (None: bit-identical) and the largest absolute difference."""
    first, largest = None, 0.0
    for (step, a), (_, b) in zip(base, other, strict=True):
        if a != b and first is None:
            first = step
        largest = max(largest, abs(a - b))
    return first, largest


def weight_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two runs' final model weights (their last checkpoints)."""
    import torch

    def weights(run: Path) -> dict:
        last = sorted((run / "checkpoints").glob("ckpt-*.pth"))[-1]
        return torch.load(last, map_location="cpu", weights_only=False)["model"]

    wa, wb = weights(a), weights(b)
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def smoke_config(work: Path) -> Path:
    """A tiny run's config: 10 generated images at 32 px, a 1-block ViT at patch 8."""
    from semmae.cli import run_stage, stage_config

    data = work / "data"
    run_stage("data synth", stage_config("data synth", out=str(data), num_images=10, size=32))
    config = work / "config.yaml"
    config.write_text(
        f"data: {data / 'train' if (data / 'train').is_dir() else data}\nimg_size: 32\nmodel: mae_vit_tiny_patch8\n"
        "depth: 1\ndecoder_depth: 1\nbatch_size: 4\nepochs: 1\nwarmup_epochs: 0\nnum_workers: 0\ndevice: cpu\n"
        "log_every: 1\nmasking: random\n"
    )
    return config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="a run folder's config.yaml (its data and parts must exist)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--masking", nargs="+", default=[None], help="override the config's masking (one run each)"
    )
    p.add_argument("--capabilities", nargs="+", default=None, help="default: default avx2 and this machine's")
    p.add_argument("--out", type=Path, default=Path("isa-drift"))
    p.add_argument("--smoke", action="store_true", help="a tiny generated run, 4 steps")
    args = p.parse_args(argv)
    own = machine_capability()
    if args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        args.config, args.steps, args.masking = smoke_config(args.out), 4, [None]
        caps = args.capabilities or ["default", own]
    else:
        if args.config is None:
            p.error("--config is required (a run folder's config.yaml), or --smoke")
        caps = args.capabilities or list(dict.fromkeys(["default", "avx2", own]))
    if args.out.exists() and any(args.out.glob("*/log.jsonl")):
        p.error(f"--out {args.out} holds runs of an earlier call; choose a new folder")
    lines = [
        "# Kernel drift: the same run on other CPU kernels",
        "",
        f"Made by `python benchmarks/isa_drift.py --config {args.config} --steps {args.steps}"
        + (f" --masking {' '.join(m for m in args.masking if m)}" if any(args.masking) else "")
        + (f" --capabilities {' '.join(args.capabilities)}" if args.capabilities else "")
        + f"` on a machine whose kernels are `{own}`; each run a fresh process, losses compared with `{caps[0]}`'s.",
        "",
        "| masking | kernels | first logged step whose loss differs | largest loss difference "
        "| largest weight difference at the end |",
        "|---|---|---|---|---|",
    ]
    for masking in args.masking:
        # one folder per run (a capability named twice is run twice: the same kernels, a control)
        folder = [
            args.out / f"{masking or 'config'}-{c}{'' if caps.count(c) == 1 else f'-{i}'}"
            for i, c in enumerate(caps)
        ]
        runs = [train(args.config, folder[i], args.steps, c, masking) for i, c in enumerate(caps)]
        for i, c in enumerate(caps[1:], start=1):
            first, largest = compare(runs[0], runs[i])
            shown = "none" if first is None else str(first)
            weight = weight_difference(folder[0], folder[i])
            lines.append(f"| {masking or 'as configured'} | {c} | {shown} | {largest:.3g} | {weight:.3g} |")
    text = "\n".join(lines) + "\n"
    (args.out / "isa-drift.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
