"""Self-distilled vs MAE part encoder at equal wall time (issue 14; ``docs/bootstrap.md``).

Per seed, ``semmae bootstrap`` (preset ``bootstrap/tiny_cpu``) and the MAE bootstrap of the demo and the
reproduction harness (``pretrain/tiny_cpu``, random masking, same tiny ViT at 64 px, patch 8) train *side by
side at the same time*, one thread each (``OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE``), so load from other
processes hits both alike; ``--boot-epochs`` / ``--mae-epochs`` are chosen (calibrated beforehand from their
images/s side by side) so both take the same wall time, and the measured times are reported. Then, for each
encoder:

* ``knn``   - ``semmae knn`` (k 20, class token) with the training subset as memory and an Imagenette val subset
  as queries;
* ``cub``   - as ``benchmarks/parts_cub.py --encoder-checkpoint`` (:func:`semmae_lab.part_runs.learn_and_score`):
  raw-attention parts and parts learned with ``parts/tiny_cpu`` on CUB-200 train, scored on CUB test (pooled
  keypoint NMI/ARI, box fg IoU);
* ``synth`` - as ``benchmarks/parts_synthetic.py --encoder-checkpoint`` (:meth:`semmae.demo.pipeline.Demo.learn_parts`):
  the same on the demo's synthetic set.

Every stage runs in this process (the two trainings in two spawned processes,
:func:`semmae_lab.side_by_side.run_side_by_side`) from typed configs; no argv is built.

Usage::

    python benchmarks/bootstrap_compare.py train --work /tmp/bc --seeds 0 1 --boot-epochs 1 --mae-epochs 7
    python benchmarks/bootstrap_compare.py eval --work /tmp/bc --seeds 0 1
    python benchmarks/bootstrap_compare.py report --work /tmp/bc --out benchmarks/results/bootstrap-cpu.json

``--smoke`` (the test suite's; no step needed): train, eval and report of one seed at tiny sizes (:data:`SMOKE_BOOT`,
:data:`SMOKE_MAE`, 32 px, one epoch each, no loader workers) on generated data (an Imagenette-like folder and a
fake CUB, :mod:`_helpers_images`) in ``--work`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from semmae.cli import run_stage, stage_config
from semmae.engine.run_checkpoints import latest_checkpoint
from semmae_lab.part_runs import PartRun, cub_folders, learn_and_score
from semmae_lab.results_table import markdown_table
from semmae_lab.side_by_side import run_side_by_side
from semmae_lab.subsets import split_subset
from semmae_lab.tables import mean_std

HERE = Path(__file__).resolve().parent
# The developers' machine path, not a user default (imagenette2_96: Imagenette at 96 px; cub200_parts: see
# benchmarks/parts_cub.py). Elsewhere, point it at `semmae data get imagenette`'s folder and a CUB subset.
DATA = HERE.parent.parent / "shared" / "data"
METHODS = ("boot", "mae")
COMMON = {"device": "cpu", "num_workers": 1}
#: ``--smoke``: one block at 32 px, 2 local crops, a small head, batch 4 / the MAE at the same sizes
SMOKE_BOOT = dict(
    depth=1, img_size=32, local_size=16, local_crops=2, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
    batch_size=4,
)  # fmt: skip
SMOKE_MAE = dict(depth=1, decoder_depth=1, img_size=32, batch_size=4)


def subsets(work: Path, train_per_class: int, val_per_class: int, data: Path = DATA) -> tuple[Path, Path]:
    imagenette = data / "imagenette2_96"
    train = split_subset(imagenette / "train", work / f"train{train_per_class}pc", train_per_class)
    val = split_subset(imagenette / "val", work / f"val{val_per_class}pc", val_per_class)
    return train, val


def train_config(
    method: str,
    data: Path,
    out: Path,
    seed: int,
    epochs: int,
    boot_fields: dict,
    mae_fields: dict | None = None,
) -> tuple[str, object]:
    """(verb, config) of one encoder: ``semmae bootstrap`` (preset ``bootstrap/tiny_cpu``) or the MAE bootstrap."""
    common = dict(
        data=str(data), out=str(out), seed=seed, epochs=epochs, resume="auto", progress=False, **COMMON
    )
    if method == "boot":
        return "bootstrap", stage_config("bootstrap", "bootstrap/tiny_cpu", **common, **boot_fields)
    mae = {
        **dict(masking="random", batch_size=64, lr=1e-3, warmup_epochs=1, vis_every=0),
        **(mae_fields or {}),
    }
    return "pretrain", stage_config("pretrain", "pretrain/tiny_cpu", **common, **mae)


def cmd_train(args: argparse.Namespace) -> None:
    train, _ = subsets(args.work, args.train_per_class, args.val_per_class, args.data)
    times_path = args.work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for seed in args.seeds:
        jobs = {}
        for m in METHODS:
            run = args.work / f"{m}-seed{seed}"
            epochs = args.boot_epochs if m == "boot" else args.mae_epochs
            jobs[f"{m}-seed{seed}"] = (
                *train_config(m, train, run, seed, epochs, args.boot_set, args.mae_set),
                args.work / f"{m}-seed{seed}.log",  # beside the run: a run folder holds only the run
            )
        for name, seconds in run_side_by_side(jobs).items():
            times[name] = seconds
            print(f"{name}: {seconds:.0f} s", flush=True)
        times_path.write_text(json.dumps(times, indent=1))


def cmd_eval(args: argparse.Namespace) -> None:
    from semmae.demo.config import DemoConfig
    from semmae.demo.pipeline import Demo

    train, val = subsets(args.work, args.train_per_class, args.val_per_class, args.data)
    for seed in args.seeds:
        for m in args.methods:
            ckpt = latest_checkpoint(args.work / f"{m}-seed{seed}")
            res_path = args.work / f"eval-{m}-seed{seed}.json"
            res = json.loads(res_path.read_text()) if res_path.exists() else {"checkpoint": str(ckpt)}
            if "knn" in args.what and "knn" not in res:
                out = args.work / f"knn-{m}-seed{seed}"
                knn = stage_config(
                    "knn", checkpoint=str(ckpt), train=str(train), val=str(val), out=str(out), **COMMON
                )
                run_stage("knn", knn)
                knn_results = json.loads((out / "results.json").read_text())
                res["knn"] = knn_results.get("metrics", knn_results)
            if "cub" in args.what and "cub" not in res:
                cub = args.data / "cub200_parts"
                paths = cub_folders(cub, args.work / "cub")
                run = PartRun(
                    train=str(paths["train"]),
                    test=str(paths["test"]),
                    img_size=args.img_size,
                    patch_size=8,
                    num_parts=4,
                    parts_epochs=args.parts_epochs,
                    keypoints=str(cub),
                    masks=str(paths["masks"]),
                    parts_fields=args.parts_set,
                    common=dict(COMMON),
                )
                res["cub"] = learn_and_score(
                    run, ckpt, args.work / "cub" / f"parts4-{m}{seed}-seed{seed}", seed
                )
            if "synth" in args.what and "synth" not in res:
                work = args.work / f"synth-{m}{seed}"
                cfg = DemoConfig(
                    out=str(work / f"seed{seed}"),
                    budget=args.synth_budget,
                    seed=seed,
                    style="class",
                    encoder_checkpoint=str(ckpt),
                    device="cpu",
                    num_workers=COMMON["num_workers"],
                    progress=False,
                )
                res["synth"] = Demo(cfg).learn_parts()
            res_path.write_text(json.dumps(res, indent=1))
            print(f"{m} seed {seed}: {sorted(res)}", flush=True)


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
    names = {"boot": "self-distilled (`semmae bootstrap`)", "mae": "MAE bootstrap (random masking)"}
    table = []
    for m in METHODS:
        runs = rows[m]
        wall = [v for k, v in times.items() if k.startswith(f"{m}-")]
        cells = [names[m], str(len(runs)), mean_std(wall, 0)]
        knn = [r["knn"] for r in runs if "knn" in r]  # top-5 is None under 5 classes (the smoke run's 2)
        cells += [mean_std([v[k] for v in knn if v[k] is not None], 1) for k in ("top1", "top5")]
        cells += [mean_std([r[sec][meth][col] for r in runs if sec in r], 3) for sec, meth, col in COLUMNS]
        table.append(cells)
    print(markdown_table(head, table))


def smoke(args: argparse.Namespace) -> None:
    """Generated data in ``args.work / "data"``, then train, eval and report at the smoke sizes."""
    sys.path.insert(0, str(HERE))
    from _helpers_images import write_fake_cub, write_splits

    args.data = args.work / "data"
    write_splits(args.data / "imagenette2_96", train=16, val=8, size=40)
    write_fake_cub(args.data / "cub200_parts", train=16, test=4, size=40)
    COMMON["num_workers"] = 0
    args.seeds, args.train_per_class, args.val_per_class = [0], 8, 4
    args.boot_epochs = args.mae_epochs = args.parts_epochs = 1
    args.boot_set, args.mae_set = {**SMOKE_BOOT, **args.boot_set}, SMOKE_MAE
    args.img_size, args.parts_set, args.synth_budget = 32, {"batch_size": 8}, "micro"
    args.out = args.out or args.work / "report.json"
    for step in (cmd_train, cmd_eval, cmd_report):
        step(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what_to_do", nargs="?", choices=("train", "eval", "report"))
    ap.add_argument("--work", type=Path, default=None, help="run folders (required but with --smoke)")
    ap.add_argument(
        "--data", type=Path, default=DATA, help="folder holding imagenette2_96/ and cub200_parts/"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--train-per-class", type=int, default=200)
    ap.add_argument("--val-per-class", type=int, default=100)
    ap.add_argument("--boot-epochs", type=int, default=1)
    ap.add_argument("--mae-epochs", type=int, default=7)
    ap.add_argument(
        "--boot-extra",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="one more `semmae bootstrap` config field (repeat), e.g. momentum=0.95; the spelling of the recorded "
        "commands, --boot-extra=--momentum=0.95, means the same",
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--what", nargs="+", default=["knn", "cub", "synth"])
    ap.add_argument("--parts-epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--smoke", action="store_true", help="train, eval and report at tiny sizes (the test suite's)"
    )
    args = ap.parse_args()
    pairs = (item.lstrip("-").split("=", 1) for item in args.boot_extra)
    args.boot_set = {k.replace("-", "_"): yaml.safe_load(v) for k, v in pairs}
    args.mae_set, args.parts_set, args.img_size, args.synth_budget = {}, {}, 64, "small"
    if args.smoke:
        if args.work is not None:
            return smoke(args)
        with tempfile.TemporaryDirectory() as tmp:
            args.work = Path(tmp)
            return smoke(args)
    if args.what_to_do is None or args.work is None:
        ap.error("the following arguments are required: what_to_do, --work")
    args.work.mkdir(parents=True, exist_ok=True)
    {"train": cmd_train, "eval": cmd_eval, "report": cmd_report}[args.what_to_do](args)


if __name__ == "__main__":
    main()
