"""``semmae parts export``: write the part-map cache (data layer format) that semantic-guided masking reads.

For every image, in dataset order, without augmentation (the whole image resized to the encoder's input): the
argmax part per cell of a G x G grid (part maps bilinearly resized from the encoder grid to G, e.g. 14 -> 28 for
the patch-8 MAE) and a foreground score per cell (CLS attention, see :mod:`semmae.parts.inference`). Batched;
an interrupted export resumes at the first image not yet written.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset
from tqdm import tqdm

from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.part_cache import PartCache
from semmae.engine.precision import resolve_precision
from semmae.parts.checkpoint import load_part_model
from semmae.parts.config import PartsExportConfig
from semmae.parts.inference import full_image_transform, infer_parts
from semmae.utils.distributed import resolve_device
from semmae.utils.rundir import exclusive

FG_SOURCE = "last-layer CLS attention, mean over heads, bilinear to grid, min-max per image"


def export_parts(cfg: PartsExportConfig) -> PartCache:
    """Export (or resume exporting) the cache at ``cfg.out``; returns it opened."""
    device = resolve_device(cfg.device)
    encoder, model, ckpt = load_part_model(cfg.checkpoint, device)
    grid = cfg.grid or encoder.grid_size
    dataset = ImageFolderDataset(cfg.data, transform=full_image_transform(encoder.img_size))
    producer = {
        "command": "semmae parts export",
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        # the spec names a timm arch only for random-init encoders; record what was really used
        "encoder": {**ckpt["encoder"], **({"arch": None} if ckpt["encoder"].get("checkpoint") else {})},
        "encoder_architecture": encoder.describe(),
        "softmax_over": model.spec.softmax_over,
        "encoder_grid": encoder.grid_size,
        "img_size": encoder.img_size,
        "fg_source": FG_SOURCE,
        "geometry": "whole image resized to the encoder input, no crop",
    }
    # one export per cache at a time (a second one would interleave chunks): <out>.lock beside it
    with exclusive(f"{cfg.out}.lock", f"part cache {cfg.out}", "parts export"):
        return _export(cfg, device, encoder, model, grid, dataset, producer)


def _export(cfg: PartsExportConfig, device, encoder, model, grid: int, dataset, producer: dict) -> PartCache:
    precision = resolve_precision(cfg.precision, device)
    writer = PartCache.create(
        cfg.out,
        dataset.relative_paths,
        grid,
        model.spec.num_parts,
        producer,
        overwrite=cfg.overwrite,
        root=cfg.data,
    )
    todo = Subset(dataset, range(writer.next_index, len(dataset)))
    loader = DataLoader(
        todo,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    with tqdm(total=len(dataset), initial=writer.next_index, desc="export parts", dynamic_ncols=True) as bar:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            res = infer_parts(encoder, model, images, grid, precision)
            start = int(batch["index"][0])
            writer.write(start, res["part_ids"].to(torch.uint8).cpu(), res["fg"].cpu())
            bar.update(images.shape[0])
    return writer.finalize()
