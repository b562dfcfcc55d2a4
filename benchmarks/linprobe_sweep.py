"""Does the CPU linear-probe preset's learning-rate sweep cover its optimum? (issue 29)

Runs ``semmae linprobe`` (preset ``eval/linprobe_cpu_tiny``, fast mode) on one checkpoint with a wide sweep of
base learning rates (every head trains on the same cached features in one pass, so a wide sweep costs little)
for each ``--epochs`` value, and prints a markdown table: val top-1 per blr, the best blr, and where the best of
the preset's own sweep lies (inside, or on its top/bottom edge).

    python benchmarks/linprobe_sweep.py --checkpoint runs/pt/checkpoints/ckpt-000000240.pth \
        --train synth/train --val synth/val --epochs 30 100 --out /tmp/sweep

``--smoke`` (the test suite's): generated images (2 classes, 32 px), a micro MAE pretrained for one epoch as the
checkpoint, one 1-epoch sweep of two rates, into ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from semmae.cli import guard, run_stage, stage_config
from semmae.config import load_yaml
from semmae.eval.linprobe import sweep_edge

WIDE = [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4]


def sweep(args: argparse.Namespace) -> list[dict]:
    rows = []
    for epochs in args.epochs:
        out = Path(args.out) / f"e{epochs}"
        cfg = stage_config(
            "linprobe",
            args.preset,
            checkpoint=args.checkpoint,
            train=args.train,
            val=args.val,
            epochs=epochs,
            warmup_epochs=max(1, epochs // 10),
            blrs=args.blrs,
            out=str(out),
            num_workers=args.num_workers,
            **({"batch_size": args.batch_size} if args.batch_size else {}),
            overwrite=True,
        )
        t = time.perf_counter()
        run_stage("linprobe", cfg)
        res = json.loads((out / "results.json").read_text())
        rows.append({"epochs": epochs, "seconds": time.perf_counter() - t, **res})
    return rows


def table(rows: list[dict], preset_blrs: list[float]) -> str:
    blrs = [r["blr"] for r in rows[0]["per_blr"]]
    lines = [
        "| epochs | " + " | ".join(f"{b:g}" for b in blrs) + " | best blr (wide) | best of preset sweep |",
        "|---|" + "---|" * (len(blrs) + 2),
    ]
    for r in rows:
        top1 = {p["blr"]: p["top1"] for p in r["per_blr"]}
        best = max(top1.values())
        cells = [f"**{top1[b]:.1f}**" if top1[b] == best else f"{top1[b]:.1f}" for b in blrs]
        inside = [b for b in preset_blrs if b in top1]
        note = ""
        if inside:
            pb = max(inside, key=lambda b: top1[b])
            edge = sweep_edge(inside, pb)
            note = f"{pb:g} ({top1[pb]:.1f}){' on the ' + edge + ' edge' if edge else ', inside'}"
        lines.append(
            f"| {r['epochs']} | " + " | ".join(cells) + f" | {r['best_blr']:g} ({best:.1f}) | {note} |"
        )
    return "\n".join(lines)


def smoke_inputs(args: argparse.Namespace, root: Path) -> None:
    """Generated train / val images and a micro MAE checkpoint under ``root``; ``args`` set to sweep them (one
    epoch, two rates, batch 4, no loader workers)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _helpers_images import write_splits

    from semmae.engine.run_checkpoints import latest_checkpoint

    data = write_splits(root / "data", train=8, val=4, size=32)
    pretrain = stage_config(
        "pretrain",
        data=str(data / "train"),
        out=str(root / "pretrain"),
        model="mae_vit_micro_patch8",
        img_size=32,
        masking="random",
        epochs=1,
        warmup_epochs=0,
        batch_size=4,
        num_workers=0,
        device="cpu",
        vis_every=0,
        progress=False,
    )
    run_stage("pretrain", pretrain)
    args.checkpoint = str(latest_checkpoint(root / "pretrain"))
    args.train, args.val = str(data / "train"), str(data / "val")
    args.epochs, args.blrs, args.num_workers, args.batch_size = [1], [1.6, 6.4], 0, 4
    args.out = args.out or str(root / "sweep")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--train")
    ap.add_argument("--val")
    ap.add_argument("--epochs", type=int, nargs="+", default=[30, 100])
    ap.add_argument("--blrs", type=float, nargs="+", default=WIDE)
    ap.add_argument("--preset", default="eval/linprobe_cpu_tiny")
    ap.add_argument("--compare-blrs", type=float, nargs="+", default=None, help="default: the preset's blrs")
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--out")
    ap.add_argument(
        "--smoke", action="store_true", help="generated data, a micro checkpoint (the test suite's)"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            smoke_inputs(args, Path(tmp))
            return report(args)
    missing = [f"--{k}" for k in ("checkpoint", "train", "val", "out") if getattr(args, k) is None]
    if missing:
        ap.error(f"the following arguments are required: {', '.join(missing)}")
    return report(args)


def report(args: argparse.Namespace) -> int:
    """The sweep of ``args`` and its table, on stdout."""
    rows = sweep(args)
    preset_blrs = args.compare_blrs or load_yaml(args.preset).get("blrs", [])
    print(table(rows, preset_blrs))
    print("seconds per run: " + ", ".join(f"{r['epochs']} ep {r['seconds']:.0f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(guard("linprobe_sweep", lambda: main()))
