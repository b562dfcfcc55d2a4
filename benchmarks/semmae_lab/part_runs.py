"""Part learning scored on held-out images, as the part benchmarks chain it (``benchmarks/parts_cub.py``,
``benchmarks/bootstrap_compare.py``): a part encoder (a short random-masking MAE unless one is given), then per
seed ``semmae parts train`` -> ``parts export`` of the test images -> ``parts eval`` (learned parts beside raw
attention, k-means, a spatial split and the grid ceiling). Each step is skipped when its output exists."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semmae.cli import run_stage, stage_config
from semmae.demo.recipe import PARTS_PRESET  # the demo's part-learning recipe, on these benchmarks' budgets
from semmae.engine.run_checkpoints import latest_checkpoint
from semmae.parts.checkpoint import part_checkpoint

#: the MAE part encoder of the part benchmarks (random masking, the tiny CPU preset)
ENCODER_PRESET = "pretrain/tiny_cpu"


@dataclass(frozen=True)
class PartRun:
    """One part benchmark's setting: data, sizes, budgets, and extra ``parts train`` fields (ablations)."""

    train: str  # ImageFolder of the training images
    test: str  # ImageFolder of the scored images
    img_size: int
    patch_size: int
    num_parts: int
    parts_epochs: int
    eval_size: int = 120
    keypoints: str | None = None  # a folder with keypoints.csv (CUB)
    masks: str | None = None  # label PNGs of the test images (fg = nonzero)
    parts_fields: dict[str, Any] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=lambda: {"num_workers": 1, "device": "cpu"})


def mae_encoder(run: PartRun, out: Path, epochs: int) -> Path:
    """A random-masking MAE on the training images: the part encoder (resumes; its latest checkpoint)."""
    cfg = stage_config(
        "pretrain",
        ENCODER_PRESET,
        data=run.train,
        out=str(out),
        img_size=run.img_size,
        patch_size=run.patch_size,
        masking="random",
        epochs=epochs,
        warmup_epochs=1,
        batch_size=64,
        lr=1e-3,
        resume="auto",
        progress=False,
        **run.common,
    )
    run_stage("pretrain", cfg)
    return latest_checkpoint(out)


def learn_and_score(run: PartRun, encoder_checkpoint: str | Path, out: Path, seed: int) -> dict[str, Any]:
    """Part learning with ``encoder_checkpoint`` into ``out``, then its parts on the test images scored;
    returns ``parts eval``'s metrics (``<out>.part_metrics.json`` beside the run folder)."""
    train = stage_config(
        "parts train",
        PARTS_PRESET,
        data=run.train,
        out=str(out),
        encoder_checkpoint=str(encoder_checkpoint),
        img_size=run.img_size,
        num_parts=run.num_parts,
        epochs=run.parts_epochs,
        seed=seed,
        resume="auto",
        **run.common,
        **run.parts_fields,
    )
    run_stage("parts train", train)
    cache = out / "test.parts"
    if not cache.exists():
        export = stage_config(
            "parts export",
            data=run.test,
            checkpoint=str(part_checkpoint(out)),
            grid=run.img_size // run.patch_size,
            out=str(cache),
            **run.common,
        )
        run_stage("parts export", export)
    # beside the run folder, not in it: a file inside a `parts train` run is the run's own (semmae.utils.ownership);
    # part runs from before kept it inside, and are read as they are
    metrics = out / "part_metrics.json"
    if not metrics.exists():
        metrics = out.with_name(out.name + ".part_metrics.json")
    if not metrics.exists():
        scoring = {"keypoints": run.keypoints} if run.keypoints else {}
        evaluation = stage_config(
            "parts eval",
            data=run.test,
            cache=str(cache),
            **scoring,
            **({"masks": run.masks} if run.masks else {}),
            eval_size=run.eval_size,
            out=str(metrics),
            overwrite=True,
            **run.common,
        )
        run_stage("parts eval", evaluation)
    return json.loads(metrics.read_text())


def cub_folders(data: Path, work: Path) -> dict[str, Path]:
    """CUB-200-2011 (``images.csv`` with split, file, size and bounding box) as ImageFolder views of its official
    train / test halves (symlinks ``<split>/<file>``, so relative paths match ``keypoints.csv``'s ``file``) and
    bounding-box masks (1 = inside the box); idempotent."""
    from PIL import Image

    roots = {s: work / f"cub_{s}" for s in ("train", "test")}
    masks = work / "cub_bbox_masks"
    with open(data / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        link = roots[row["split"]] / row["file"]
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data / row["file"]).resolve())
        mask = (masks / row["file"]).with_suffix(".png")
        if not mask.exists():
            w, h = int(row["width"]), int(row["height"])
            x0, y0 = float(row["bbox_x"]), float(row["bbox_y"])
            x1, y1 = x0 + float(row["bbox_w"]), y0 + float(row["bbox_h"])
            img = Image.new("L", (w, h), 0)
            img.paste(1, (round(x0), round(y0), round(min(x1, w)), round(min(y1, h))))
            mask.parent.mkdir(parents=True, exist_ok=True)
            img.save(mask)
    return {**roots, "masks": masks}
