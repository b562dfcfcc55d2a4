"""Fast (cached features) vs full (augment through the frozen encoder every epoch) linear probe: accuracy and time
on an imagenette2_96 subset. Writes ``benchmarks/results/linprobe-modes.md``.

The encoder is a randomly initialised ViT (no pretrained checkpoint is needed to compare the two modes' cost and
agreement); both modes see the same encoder (same seed), the same epochs and the same lr sweep.
"""

from __future__ import annotations

import os
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


def run(quick: bool = True, write: bool = False) -> list[dict]:
    """Measure both modes; ``write=True`` (the script's own ``__main__``) also rewrites the results file, so
    ``run_all.py`` never overwrites committed results with a smoke run."""
    import torch

    from semmae.eval.linprobe import LinprobeConfig, run_linprobe

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    n_train, n_val, epochs = (40, 20, 8) if quick else (100, 40, 20)
    rows, out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _subset(DATA, data, n_train, n_val)
        common = dict(
            data=str(data),
            random_init=True,
            arch="vit_small_patch16",
            img_size=96,
            depth=None,
            batch_size=64,
            num_workers=2,
            device="cpu",
            epochs=epochs,
            warmup_epochs=1,
            optimizer="sgd",
            blrs=[0.01, 0.1, 1.0],
            seed=0,
        )
        common.pop("depth")
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
        "",
        f"imagenette2_96 subset: {n_train} train / {n_val} val images per class (10 classes), 96 px; encoder: random-init "
        f"ViT-S/16 (seed 0, same in every mode); {epochs} epochs, SGD, blr sweep [0.01, 0.1, 1.0] in one pass; "
        f"2 CPU cores, `python benchmarks/bench_eval.py{'' if quick else ' --full'}`.",
        "",
        "| mode | top-1 (%) | top-5 (%) | best blr | wall time (s) |",
        "|---|---|---|---|---|",
        *[f"| {m} | {a:.1f} | {b:.1f} | {lr:g} | {dt:.1f} |" for m, a, b, lr, dt in rows],
        "",
        "fast = center-crop features extracted once (+ N augmented views per image when asked), heads trained on the",
        "cached tensors; full = the MAE protocol (RandomResizedCrop + flip through the frozen encoder every epoch).",
        "The fast mode's cost is one encoder pass per view; the full mode's is one pass per epoch.",
    ]
    if write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    import sys

    for r in run(quick="--full" not in sys.argv, write=True):
        print(r)
