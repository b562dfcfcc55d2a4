"""Refactor check: every training verb, tiny, with the code of two checkouts; logs, results and checkpoints compared
bit for bit (issue 41: "every verb's behaviour and numbers unchanged").

The six training verbs (pretrain, bootstrap, parts train on the pretrain run, finetune, the full linear probe,
segment train) run on 64 synthetic images at 32 px (2 epochs or 6 iterations, seed 3, one thread) with the code of
``--before`` and of ``--after`` (checkout roots; ``PYTHONPATH=<root>/src``), on the same images. Compared: every
``log.jsonl`` record and results JSON without timing fields (the run folders' owner markers differ by id and time
and are left out), and every tensor of every checkpoint (weights, optimiser and RNG states).

    git worktree add --detach ../wt-before <commit>
    python benchmarks/refactor_check.py --before ../wt-before --after . --work /tmp/rc

``--smoke`` (the test suite's): pretrain only, this checkout against itself (the check's own determinism).
Exit 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"img_per_s", "memory_mb", "data_wait", "eta"}

#: run folder -> (verb, preset, typed field values); run in the output folder (``pre``: the run the evaluations read)
VERBS: dict[str, tuple[str, str | None, dict]] = {
    "pre": ("pretrain", "pretrain/tiny_cpu", dict(
        data="data/train", out="pre", img_size=32, depth=1, decoder_depth=1, batch_size=8, epochs=2, warmup_epochs=1,
        num_workers=0, masking="random", log_every=1, progress=False)),
    "boot": ("bootstrap", "bootstrap/tiny_cpu", dict(
        data="data/train", out="boot", img_size=32, local_size=16, local_crops=2, depth=1, out_dim=64,
        head_hidden_dim=32, head_bottleneck_dim=16, batch_size=8, epochs=2, warmup_epochs=1, num_workers=0,
        log_every=1, progress=False)),
    "parts": ("parts train", "parts/tiny_cpu", dict(
        data="data/train", out="parts", encoder_checkpoint="pre", img_size=32, epochs=2, batch_size=16,
        num_workers=0, log_every=1)),
    "ft": ("finetune", "eval/finetune_cpu_tiny", dict(
        checkpoint="pre", train="data/train", val="data/val", out="ft", epochs=2, batch_size=8, num_workers=0)),
    "lp": ("linprobe", None, dict(
        mode="full", checkpoint="pre", train="data/train", val="data/val", out="lp", epochs=2, warmup_epochs=1,
        batch_size=8, num_workers=0)),
    "seg": ("segment train", "segment/tiny_synth", dict(
        checkpoint="pre", data="data", layout="synth", out="seg", crop_size=32, scale_base=32, max_long=64,
        eval_stride=16, iters=6, batch_size=4, ckpt_every=3, log_every=1)),
}  # fmt: skip

#: the child: one stage's typed config run in-process there (a fresh interpreter: the code of the checkout given)
CHILD = """
import json, sys
from semmae.cli import run_stage, stage_config
verb, preset, values = json.loads(sys.argv[1])
run_stage(verb, stage_config(verb, preset=preset, **values))
"""


def semmae(root: Path, cwd: Path, verb: str, preset: str | None, values: dict) -> None:
    """``semmae <verb>`` with the code of checkout ``root``, in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    spec = json.dumps([verb, preset, values])
    subprocess.run(
        [sys.executable, "-c", CHILD, spec], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_verbs(root: Path, out: Path, data: Path, verbs: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data").exists():
        (out / "data").symlink_to(data.resolve())
    for name in verbs:
        verb, preset, values = VERBS[name]
        semmae(root, out, verb, preset, {**values, "seed": 3})


def _clean(v, roots: tuple[str, ...]):
    if isinstance(v, dict):
        return {
            k: _clean(x, roots)
            for k, x in v.items()
            if k not in SKIP and "time" not in k and "second" not in k
        }
    if isinstance(v, list):
        return [_clean(x, roots) for x in v]
    if isinstance(v, str):
        for r in roots:
            v = v.replace(r, "ROOT")
    return v


def _records(path: Path, roots: tuple[str, ...]):
    lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
    return [_clean(json.loads(x), roots) for x in lines if x.strip()]


def _tensors(d, pre: str = "") -> dict:
    import torch

    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_tensors(v, f"{pre}/{k}"))
    elif isinstance(d, (list, tuple)):
        for i, v in enumerate(d):
            out.update(_tensors(v, f"{pre}/{i}"))
    elif torch.is_tensor(d):
        out[pre] = d
    return out


def compare(a: Path, b: Path) -> dict:
    """``{"records": [file, same], "checkpoints": [file, tensors, same], "different": [...]}`` of two trees."""
    import torch

    roots = (str(a.resolve()), str(b.resolve()))
    found: dict = {"records": [], "checkpoints": [], "different": []}
    for f in sorted(
        p for p in a.rglob("*") if p.suffix in (".json", ".jsonl") and p.name != ".semmae-owner.json"
    ):
        rel = f.relative_to(a)
        if rel.parts[0] == "data":
            continue
        same = (b / rel).is_file() and _records(f, roots) == _records(b / rel, roots)
        found["records"].append([str(rel), same])
    for f in sorted(a.rglob("*.pth")):
        rel = f.relative_to(a)
        x = _tensors(torch.load(f, weights_only=False))
        y = _tensors(torch.load(b / rel, weights_only=False)) if (b / rel).is_file() else {}
        same = x.keys() == y.keys() and all(x[k].shape == y[k].shape and torch.equal(x[k], y[k]) for k in x)
        found["checkpoints"].append([str(rel), len(x), same])
    found["different"] = [r[0] for r in found["records"] + found["checkpoints"] if not r[-1]]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="checkout root of the code before")
    ap.add_argument(
        "--after", type=Path, default=ROOT, help="checkout root of the code after (default: this one)"
    )
    ap.add_argument("--work", type=Path, required=True, help="a new folder for the runs")
    ap.add_argument("--smoke", action="store_true", help="pretrain only, this checkout against itself")
    a = ap.parse_args()
    before = ROOT if a.smoke else a.before
    if before is None:
        ap.error("--before is required (or --smoke)")
    verbs = ["pre"] if a.smoke else list(VERBS)
    a.work.mkdir(parents=True, exist_ok=True)
    data = a.work / "data"
    if not data.exists():
        semmae(a.after, a.work, "data synth", None, dict(out="data", num_images=64, size=32))
    run_verbs(before, a.work / "before", data, verbs)
    run_verbs(a.after, a.work / "after", data, verbs)
    found = compare(a.work / "before", a.work / "after")
    print(json.dumps(found, indent=1))
    return 1 if found["different"] else 0


if __name__ == "__main__":
    sys.exit(main())
