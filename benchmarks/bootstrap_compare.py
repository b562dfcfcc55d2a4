"""Self-distilled vs MAE part encoder at equal wall time (issue 14; ``docs/bootstrap.md``).

Per seed, ``semmae bootstrap`` (preset ``bootstrap/tiny_cpu``) and the MAE bootstrap of the demo and the
reproduction harness (``pretrain/tiny_cpu``, random masking, same tiny ViT at 64 px, patch 8) train *side by
side at the same time*, one thread each (``OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE``), so load from other
processes hits both alike; ``--boot-epochs`` / ``--mae-epochs`` are chosen (calibrated beforehand from their
images/s side by side) so both take the same wall time, and the measured times are reported. Then, for each
encoder:

* ``knn``   - ``semmae knn`` (k 20, class token) with the training subset as memory and an Imagenette val subset
  as queries;
* ``cub``   - ``benchmarks/parts_cub.py --encoder-checkpoint``: raw-attention parts and parts learned with
  ``parts/tiny_cpu`` on CUB-200 train, scored on CUB test (pooled keypoint NMI/ARI, box fg IoU);
* ``synth`` - ``benchmarks/parts_synthetic.py --encoder-checkpoint``: the same on the demo's synthetic set.

Usage::

    python benchmarks/bootstrap_compare.py train --work /tmp/bc --seeds 0 1 --boot-epochs 1 --mae-epochs 7
    python benchmarks/bootstrap_compare.py eval --work /tmp/bc --seeds 0 1
    python benchmarks/bootstrap_compare.py report --work /tmp/bc --out benchmarks/results/bootstrap-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "imagenette2_96"
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
METHODS = ("boot", "mae")


def subsets(work: Path, train_per_class: int, val_per_class: int) -> tuple[Path, Path]:
    from semmae.data.subset import make_subset

    train = make_subset(DATA / "train", work / f"train{train_per_class}pc", train_per_class, allow_fewer=True)
    val = make_subset(DATA / "val", work / f"val{val_per_class}pc", val_per_class, allow_fewer=True)
    return train.out, val.out


def train_argv(method: str, data: Path, out: Path, seed: int, epochs: int, extra: list[str]) -> list[str]:
    common = ["--data", str(data), "--out", str(out), "--seed", str(seed), "--epochs", str(epochs)]
    common += ["--resume", "auto", "--no-progress", "--device", "cpu", "--num-workers", "1"]
    if method == "boot":
        return [PY, "-m", "semmae.cli", "bootstrap", "--config", "bootstrap/tiny_cpu", *common, *extra]
    return [
        *[PY, "-m", "semmae.cli", "pretrain", "--config", "pretrain/tiny_cpu", *common],
        *["--masking", "random", "--batch-size", "64", "--lr", "1e-3", "--warmup-epochs", "1"],
        *["--vis-every", "0"],
    ]


def latest(run: Path) -> Path:
    from semmae.engine.checkpoint import CheckpointManager

    found = CheckpointManager(run).latest()
    if found is None:
        raise SystemExit(f"no checkpoint in {run}")
    return found


def cmd_train(args: argparse.Namespace) -> None:
    train, _ = subsets(args.work, args.train_per_class, args.val_per_class)
    times_path = args.work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for seed in args.seeds:
        procs = {}
        for m in METHODS:
            run = args.work / f"{m}-seed{seed}"
            epochs = args.boot_epochs if m == "boot" else args.mae_epochs
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "stdout.log", "a")
            argv = train_argv(m, train, run, seed, epochs, args.boot_extra)
            procs[m] = (subprocess.Popen(argv, env=ENV, stdout=log, stderr=subprocess.STDOUT), time.time())
        for m, (proc, t0) in procs.items():
            if proc.wait() != 0:
                raise SystemExit(
                    f"{m} seed {seed} failed; see {args.work / f'{m}-seed{seed}' / 'stdout.log'}"
                )
            times[f"{m}-seed{seed}"] = time.time() - t0
            print(f"{m} seed {seed}: {times[f'{m}-seed{seed}']:.0f} s", flush=True)
        times_path.write_text(json.dumps(times, indent=1))


def run_json(argv: list[str]) -> dict:
    out = subprocess.run(argv, env=ENV, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cmd_eval(args: argparse.Namespace) -> None:
    train, val = subsets(args.work, args.train_per_class, args.val_per_class)
    for seed in args.seeds:
        for m in args.methods:
            ckpt = latest(args.work / f"{m}-seed{seed}")
            res_path = args.work / f"eval-{m}-seed{seed}.json"
            res = json.loads(res_path.read_text()) if res_path.exists() else {"checkpoint": str(ckpt)}
            if "knn" in args.what and "knn" not in res:
                res["knn"] = run_json(
                    [PY, "-m", "semmae.cli", "knn", "--checkpoint", str(ckpt), "--train", str(train)]
                    + [
                        "--val",
                        str(val),
                        "--out",
                        str(args.work / f"knn-{m}-seed{seed}"),
                        "--num-workers",
                        "1",
                    ]
                    + ["--device", "cpu"]
                )
            if "cub" in args.what and "cub" not in res:
                tag = f"-{m}{seed}"
                subprocess.run(
                    [PY, str(HERE / "parts_cub.py"), "--work", str(args.work / "cub"), "--seeds", str(seed)]
                    + ["--encoder-checkpoint", str(ckpt), "--img-size", "64", "--patch-size", "8"]
                    + ["--parts-epochs", str(args.parts_epochs), f"--tag={tag}"]
                    + ["--out", str(args.work / f"cub{tag}")],
                    env=ENV,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                res["cub"] = json.loads((args.work / f"cub{tag}.json").read_text())["runs"][0]
            if "synth" in args.what and "synth" not in res:
                out = args.work / f"synth-{m}{seed}.json"
                subprocess.run(
                    [PY, str(HERE / "parts_synthetic.py"), "--work", str(args.work / f"synth-{m}{seed}")]
                    + ["--seeds", str(seed), "--encoder-checkpoint", str(ckpt), "--out", str(out)],
                    env=ENV,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                res["synth"] = json.loads(out.read_text())["runs"][0]
            res_path.write_text(json.dumps(res, indent=1))
            print(f"{m} seed {seed}: {sorted(res)}", flush=True)


def _ms(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


#: (section, method in part_metrics.json, column) of the table
COLUMNS = [
    ("cub", "attention", "kp_nmi"),
    ("cub", "attention", "fg_iou_image"),
    ("cub", "learned", "kp_nmi"),
    ("cub", "learned", "kp_ari"),
    ("cub", "learned", "fg_iou_image"),
    ("cub", "learned", "parts_used"),
    ("synth", "attention", "nmi_image"),
    ("synth", "attention", "fg_iou_image"),
    ("synth", "learned", "nmi_image"),
    ("synth", "learned", "fg_iou_image"),
    ("synth", "learned", "parts_used"),
]


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown table (mean ± std over seeds) on stdout; every number in ``--out`` (JSON)."""
    times = json.loads((args.work / "times.json").read_text())
    rows = {
        m: [json.loads(p.read_text()) for p in sorted(args.work.glob(f"eval-{m}-seed*.json"))]
        for m in METHODS
    }
    if args.out:
        args.out.write_text(json.dumps({"times": times, "runs": rows}, indent=1))
    head = ["encoder", "seeds", "train wall s", "kNN top-1", "kNN top-5"]
    head += [f"{sec} {meth} {col}" for sec, meth, col in COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    names = {"boot": "self-distilled (`semmae bootstrap`)", "mae": "MAE bootstrap (random masking)"}
    for m in METHODS:
        runs = rows[m]
        wall = [v for k, v in times.items() if k.startswith(f"{m}-")]
        cells = [names[m], str(len(runs)), _ms(wall, 0)]
        cells += [_ms([r["knn"][k] for r in runs if "knn" in r], 1) for k in ("top1", "top5")]
        cells += [_ms([r[sec][meth][col] for r in runs if sec in r], 3) for sec, meth, col in COLUMNS]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what_to_do", choices=("train", "eval", "report"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--train-per-class", type=int, default=200)
    ap.add_argument("--val-per-class", type=int, default=100)
    ap.add_argument("--boot-epochs", type=int, default=1)
    ap.add_argument("--mae-epochs", type=int, default=7)
    ap.add_argument(
        "--boot-extra",
        action="append",
        default=[],
        help="one more `semmae bootstrap` flag (repeat: --boot-extra=--momentum=0.95)",
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--what", nargs="+", default=["knn", "cub", "synth"])
    ap.add_argument("--parts-epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"train": cmd_train, "eval": cmd_eval, "report": cmd_report}[args.what_to_do](args)


if __name__ == "__main__":
    main()
