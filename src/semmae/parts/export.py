"""``semmae parts export``: write the part-map cache (data layer format) that semantic-guided masking reads.

For every image, in dataset order, without augmentation (the whole image resized to the encoder's input), a part id
and a foreground score per cell of a G x G grid. ``--source learned`` (default): the argmax over the learned part
maps of a part checkpoint (Sec. 3.1), bilinearly resized from the encoder grid to G (e.g. 14 -> 28 for the patch-8
MAE). ``--source attention``: the raw-attention parts of paper Table 4's baseline, the argmax over the last layer's
CLS-attention heads of a frozen encoder checkpoint (one "part" per head). The foreground score is the same for both
(CLS attention, see :mod:`semmae.parts.inference`). ``--source masks``: the oracle parts - the majority label of
ground-truth label PNGs in each cell (background, label 0, is part 0 like any other), foreground = the cell's share
of non-background pixels; what a perfect part learner would hand to the masking (issue: the mechanism test).
Batched; an interrupted export resumes at the first image not yet written.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.part_cache import MAX_PARTS, PartCache
from semmae.data.workers import worker_plan
from semmae.engine.precision import Precision, resolve_precision
from semmae.errors import UserError
from semmae.parts.checkpoint import load_part_model
from semmae.parts.config import PartsExportConfig
from semmae.parts.encoder import FrozenEncoder
from semmae.parts.inference import full_image_transform, infer_attention_parts, infer_parts
from semmae.utils.distributed import resolve_device
from semmae.utils.run_lock import exclusive
from semmae.utils.rundir import check_out_outside

FG_SOURCE = "last-layer CLS attention, mean over heads, bilinear to grid, min-max per image"
MASK_PARTS = "majority ground-truth label per cell (label 0 = background is part 0)"
MASK_FG = "share of non-background (label > 0) pixels in the cell"
#: label masks are resized (nearest) to ``grid * MASK_CELL_PIXELS`` before the per-cell vote
MASK_CELL_PIXELS = 8
ATTENTION_PARTS = "argmax over the last-layer CLS-attention heads, bilinear to grid (one part per head)"
GEOMETRY = "whole image resized to the encoder input, no crop"

#: (images [B, 3, S, S], grid G, precision) -> {"part_ids": long [B, G, G], "fg": float [B, G, G], ...}
Predict = Callable[[torch.Tensor, int, Precision], dict[str, torch.Tensor]]


def cache_out(out: str) -> str:
    """``--out`` as the cache's own path: ``cache/`` is ``cache``; a path that names no new entry of a folder
    (``.``, ``..``, ``/``, ``dir/..``) is refused in one line, before anything is created."""
    path = Path(out)
    if path.name in ("", ".", ".."):
        raise UserError(
            f"--out {out} names a folder that holds other things, not a part cache; give the cache its own "
            "name, e.g. --out data.parts"
        )
    return str(path)


@contextlib.contextmanager
def removing_new_parents(out: str | Path) -> Iterator[None]:
    """On an error, remove the folders above ``out`` that did not exist before and are still empty (a refused
    export leaves no empty folder behind)."""
    new = [p for p in Path(out).parents if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for folder in new:
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def export_parts(cfg: PartsExportConfig) -> PartCache:
    """Export (or resume exporting) the cache at ``cfg.out``; returns it opened."""
    cfg = dataclasses.replace(cfg, out=cache_out(cfg.out))
    check_out_outside(cfg.out, {"--data": cfg.data})  # a cache inside the ImageFolder would be a class of it
    with removing_new_parents(cfg.out):
        return _export_parts(cfg)


def _export_parts(cfg: PartsExportConfig) -> PartCache:
    if cfg.source == "masks":
        return export_mask_parts(cfg)
    device = resolve_device(cfg.device)
    if cfg.source == "attention":
        encoder = load_attention_encoder(cfg.encoder_checkpoint, cfg.img_size).to(device)
        num_parts = encoder.num_heads
        producer = {
            "command": "semmae parts export --source attention",
            "encoder_checkpoint": str(Path(cfg.encoder_checkpoint).resolve()),
            "parts": ATTENTION_PARTS,
        }
        predict: Predict = partial(infer_attention_parts, encoder)
    else:
        encoder, model, ckpt = load_part_model(cfg.checkpoint, device)
        num_parts = model.spec.num_parts
        producer = {
            "command": "semmae parts export",
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
            # the spec names a timm arch only for random-init encoders; record what was really used
            "encoder": {
                **ckpt.extra["frozen_encoder"],
                **({"arch": None} if ckpt.extra["frozen_encoder"].get("checkpoint") else {}),
            },
            "softmax_over": model.spec.softmax_over,
        }
        predict = partial(infer_parts, encoder, model)
    grid = cfg.grid or encoder.grid_size
    producer |= {
        "encoder_architecture": encoder.describe(),
        "encoder_grid": encoder.grid_size,
        "img_size": encoder.img_size,
        "fg_source": FG_SOURCE,
        "geometry": GEOMETRY,
    }
    dataset = ImageFolderDataset(cfg.data, transform=full_image_transform(encoder.img_size))
    # one export per cache at a time (a second one would interleave chunks): <out>.lock beside it
    with exclusive(f"{cfg.out}.lock", f"part cache {cfg.out}", "parts export"):
        return _export(cfg, device, predict, grid, num_parts, dataset, producer)


def mask_cells(masks: np.ndarray, grid: int, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Oracle cells of label masks ``uint8 [n, R, R]`` (R a multiple of ``grid``): the majority label
    ``int64 [n, G, G]`` and the non-background share ``float32 [n, G, G]`` of every cell."""
    n, r = masks.shape[0], masks.shape[1] // grid
    cells = masks.reshape(n, grid, r, grid, r).transpose(0, 1, 3, 2, 4).reshape(n, grid, grid, r * r)
    counts = (cells[..., None] == np.arange(num_labels, dtype=masks.dtype)).sum(3)
    return counts.argmax(-1), (cells > 0).mean(-1, dtype=np.float32)


def export_mask_parts(cfg: PartsExportConfig) -> PartCache:
    """``--source masks``: the oracle part cache of ``cfg.data`` from the label PNGs under ``cfg.masks``."""
    from semmae.parts.evaluate import load_masks

    dataset = ImageFolderDataset(cfg.data)
    size = cfg.grid * MASK_CELL_PIXELS
    masks = load_masks(cfg.masks, dataset.relative_paths, size)
    num_labels = int(masks.max()) + 1
    if num_labels < 2:
        raise UserError(f"the masks under {cfg.masks} hold no part label (all 0 = background)")
    if num_labels > MAX_PARTS:
        raise UserError(
            f"the masks under {cfg.masks} hold {num_labels} labels (background included); a part cache holds "
            f"at most {MAX_PARTS}"
        )
    producer = {
        "command": "semmae parts export --source masks",
        "masks": str(Path(cfg.masks).resolve()),
        "parts": MASK_PARTS,
        "fg_source": MASK_FG,
        "geometry": f"whole label mask resized (nearest) to {size} px, no crop",
    }
    with exclusive(f"{cfg.out}.lock", f"part cache {cfg.out}", "parts export"):
        writer = PartCache.create(
            cfg.out,
            dataset.relative_paths,
            cfg.grid,
            num_labels,
            producer,
            overwrite=cfg.overwrite,
            root=cfg.data,
        )
        for start in range(writer.next_index, len(dataset), cfg.batch_size):
            part_ids, fg = mask_cells(masks[start : start + cfg.batch_size], cfg.grid, num_labels)
            writer.write(start, part_ids, fg)
        return writer.finalize()


def load_attention_encoder(checkpoint: str, img_size: int = 0) -> FrozenEncoder:
    """The frozen encoder of an encoder checkpoint (any layout :mod:`semmae.models.encoder_loading` reads) at
    ``img_size`` (0: the checkpoint's own input size), for the raw-attention parts."""
    from semmae.models.encoder_loading import load_encoder

    vit = load_encoder(checkpoint, img_size=img_size or None).model
    return FrozenEncoder(vit)


def _export(
    cfg: PartsExportConfig, device, predict: Predict, grid: int, num_parts: int, dataset, producer: dict
) -> PartCache:
    precision = resolve_precision(cfg.precision, device)
    writer = PartCache.create(
        cfg.out,
        dataset.relative_paths,
        grid,
        num_parts,
        producer,
        overwrite=cfg.overwrite,
        root=cfg.data,
    )
    todo = Subset(dataset, range(writer.next_index, len(dataset)))
    workers = worker_plan(cfg.num_workers, device.type)
    loader = DataLoader(
        todo,
        batch_size=cfg.batch_size,
        shuffle=False,
        pin_memory=device.type == "cuda",
        **workers.loader_args,
    )
    with tqdm(total=len(dataset), initial=writer.next_index, desc="export parts", dynamic_ncols=True) as bar:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            res = predict(images, grid, precision)
            start = int(batch["index"][0])
            writer.write(start, res["part_ids"].to(torch.uint8).cpu(), res["fg"].cpu())
            bar.update(images.shape[0])
    return writer.finalize()
