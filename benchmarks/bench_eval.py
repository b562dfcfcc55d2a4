"""Fast (cached features) vs full (augment through the frozen encoder every epoch) linear probe: accuracy and time
on an imagenette2_96 subset. Writes ``benchmarks/results/linprobe-modes.md``.

The encoder is a randomly initialised ViT (no pretrained checkpoint is needed to compare the two modes' cost and
agreement); both modes see the same encoder (same seed), the same epochs and the same lr sweep.

    python benchmarks/bench_eval.py [--full] [--smoke] [--out FILE.md]

``--smoke`` (the test suite's): every mode once on generated images (2 classes, 32 px), the micro ViT, one epoch,
no loader workers; the table goes to ``--out`` only (never to the committed results).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

# the developers' machine path, not a user default; elsewhere the folder `semmae data get imagenette` writes
DATA = Path("/work/shared/data/imagenette2_96")
RESULTS = Path(__file__).parent / "results" / "linprobe-modes.md"


def _subset(root: Path, out: Path, per_class_train: int, per_class_val: int) -> None:
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for cls in sorted(p.name for p in (root / split).iterdir() if p.is_dir()):
            files = sorted((root / split / cls).iterdir())[:n]
            (out / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                os.symlink(f, out / split / cls / f.name)


#: ``--smoke``: the micro ViT at 32 px, one epoch, batch 8, no loader workers
SMOKE = dict(arch="vit_micro_patch8", img_size=32, batch_size=8, num_workers=0, epochs=1, warmup_epochs=0)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"  # top-5 of fewer than 5 classes is None


def run(
    quick: bool = True, write: bool = False, smoke: bool = False, out_file: str | None = None
) -> list[dict]:
    """Measure both modes; ``write=True`` (the script's own ``__main__``) also rewrites the results file (or
    ``out_file``), so ``run_all.py`` never overwrites committed results with a smoke run. ``smoke``: generated
    images and :data:`SMOKE`'s sizes, the results file untouched."""
    import torch

    from semmae.eval.config import LinprobeConfig
    from semmae.eval.linprobe import run_linprobe

    if not smoke:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    n_train, n_val, epochs = (4, 2, 1) if smoke else (40, 20, 8) if quick else (100, 40, 20)
    rows, out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        if smoke:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from _helpers_images import write_splits

            write_splits(data, train=2 * n_train, val=2 * n_val, size=32)
        else:
            _subset(DATA, data, n_train, n_val)
        common = dict(
            data=str(data),
            random_init=True,
            arch="vit_small_patch16",
            img_size=96,
            batch_size=64,
            num_workers=2,
            device="cpu",
            epochs=epochs,
            warmup_epochs=1,
            optimizer="sgd",
            blrs=[0.01, 0.1, 1.0],
            seed=0,
        )
        if smoke:
            common.update(SMOKE)
        for mode, extra in (("fast", {}), ("fast+2views", {"fast_views": 2}), ("full", {})):
            cfg = LinprobeConfig(**common, mode=mode.split("+")[0], out=str(Path(tmp) / mode), **extra)
            t = time.perf_counter()
            res = run_linprobe(cfg)
            dt = time.perf_counter() - t
            rows.append((mode, res["top1"], res["top5"], res["best_blr"], dt))
            out += [
                dict(name=f"linprobe_{mode}_top1", value=res["top1"], unit="%", target=None),
                dict(name=f"linprobe_{mode}_seconds", value=dt, unit="s", target=None),
            ]
    lines = [
        "# Linear probe: fast (cached features) vs full (augmented through the encoder each epoch)",
        *(
            ["", "**Smoke run** (generated images, the micro ViT at 32 px): the numbers mean nothing."]
            if smoke
            else []
        ),
        "",
        f"imagenette2_96 subset: {n_train} train / {n_val} val images per class (10 classes), 96 px; encoder: random-init "
        f"ViT-S/16 (seed 0, same in every mode); {epochs} epochs, SGD, blr sweep [0.01, 0.1, 1.0] in one pass; "
        f"2 CPU cores, `python benchmarks/bench_eval.py{'' if quick else ' --full'}`.",
        "",
        "| mode | top-1 (%) | top-5 (%) | best blr | wall time (s) |",
        "|---|---|---|---|---|",
        *[f"| {m} | {_pct(a)} | {_pct(b)} | {lr:g} | {dt:.1f} |" for m, a, b, lr, dt in rows],
        "",
        "fast = center-crop features extracted once (+ N augmented views per image when asked), heads trained on the",
        "cached tensors; full = the MAE protocol (RandomResizedCrop + flip through the frozen encoder every epoch).",
        "The fast mode's cost is one encoder pass per view; the full mode's is one pass per epoch.",
    ]
    target = Path(out_file) if out_file else None if smoke else RESULTS
    if write and target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="100 / 40 images per class, 20 epochs")
    ap.add_argument("--smoke", action="store_true", help="generated images, tiny sizes (the test suite's)")
    ap.add_argument("--out", default=None, help=f"write the table here (default {RESULTS}; --smoke: nowhere)")
    args = ap.parse_args()
    for r in run(quick=not args.full, write=True, smoke=args.smoke, out_file=args.out):
        print(r)
