"""``semmae parts eval``: score a part cache against ground-truth part masks and/or CUB-style keypoints, beside
the baselines of :mod:`semmae.parts.baselines` (metrics in :mod:`semmae.parts.metrics`).

Geometry: cache cells cover the whole image (see :mod:`semmae.parts.inference`), so a mask is resized as a whole
(nearest) to R x R with R = the smallest multiple of G >= ``eval_size``, and each cell's label is repeated over
its R/G x R/G pixels. A keypoint (x, y) of a W x H image falls in cell (floor(y G / H), floor(x G / W)).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.part_cache import PartCache, metrics_of_parts_eval
from semmae.data.workers import worker_plan
from semmae.errors import UserError
from semmae.parts.baselines import TokenKMeans, majority_per_cell, resize_ids, spatial_split
from semmae.parts.checkpoint import load_part_model
from semmae.parts.config import PartsEvalConfig
from semmae.parts.diagnostics import usage_from_ids
from semmae.parts.inference import attention_parts, full_image_transform
from semmae.parts.metrics import KeypointScorer, PartScorer
from semmae.utils.content_seal import sealed_json
from semmae.utils.distributed import resolve_device
from semmae.utils.io import atomic_write_json

METHODS = ("learned", "attention", "kmeans", "spatial", "ceiling")
COLUMNS = (
    "nmi",
    "ari",
    "miou",
    "fg_iou",
    "nmi_image",
    "ari_image",
    "miou_image",
    "fg_iou_image",
    "kp_nmi",
    "kp_ari",
    "parts_used",
    "largest_share",
)
USAGE_KEYS = ("parts_used", "parts_used_pooled", "largest_share")


def load_masks(mask_root: str | Path, relative_paths: list[str], size: int) -> np.ndarray:
    """uint8 [num_images, size, size]: each ``<mask_root>/<relative path>.png`` resized (nearest) as a whole."""
    root = Path(mask_root)
    if not root.is_dir():
        raise UserError(f"mask folder {root} does not exist")
    out = np.zeros((len(relative_paths), size, size), np.uint8)
    for i, rp in enumerate(relative_paths):
        path = root / Path(rp).with_suffix(".png")
        if not path.is_file():
            raise UserError(f"no label mask for {rp}: expected {path}")
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise UserError(f"label mask {path} has mode {im.mode}; expected a single-channel label PNG")
            arr = np.asarray(im.resize((size, size), Image.NEAREST))
        if arr.max(initial=0) > 255:
            raise UserError(f"label mask {path} has labels above 255")
        out[i] = arr.astype(np.uint8)
    return out


def load_keypoints(
    path: str | Path, relative_paths: list[str], data_root: Path
) -> tuple[list[np.ndarray], int, list[str]]:
    """Read CUB-style ``keypoints.csv`` (columns file, part_id, x, y, visible). Returns per image an array
    [k, 3] of (keypoint index, x / W, y / H) for the visible keypoints, the number of keypoint kinds and their names.
    Image sizes come from ``images.csv`` beside it (width, height) when present, else from the image files."""
    p = Path(path)
    if p.is_dir():
        p = p / "keypoints.csv"
    if not p.is_file():
        raise UserError(f"keypoint file {p} does not exist")
    sizes: dict[str, tuple[float, float]] = {}
    images_csv = p.parent / "images.csv"
    if images_csv.is_file():
        with open(images_csv, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("width") and row.get("height"):
                    sizes[row["file"]] = (float(row["width"]), float(row["height"]))
    index = {rp: i for i, rp in enumerate(relative_paths)}
    per_image: list[list[tuple[int, float, float]]] = [[] for _ in relative_paths]
    names: dict[int, str] = {}
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"file", "part_id", "x", "y", "visible"}
        if not need <= set(reader.fieldnames or ()):
            raise UserError(f"{p} must have columns {', '.join(sorted(need))}; found {reader.fieldnames}")
        for row in reader:
            i = index.get(row["file"])
            if i is None or row["visible"].strip() != "1" or not row["x"] or not row["y"]:
                continue
            pid = int(row["part_id"])
            names[pid] = row.get("part_name") or str(pid)
            if row["file"] not in sizes:
                with Image.open(data_root / row["file"]) as im:
                    sizes[row["file"]] = (float(im.width), float(im.height))
            w, h = sizes[row["file"]]
            per_image[i].append((pid, float(row["x"]) / w, float(row["y"]) / h))
    if not names:
        raise UserError(
            f"no visible keypoint in {p} matches an image of the dataset (compare its 'file' column "
            f"with paths like {relative_paths[0]!r})"
        )
    ids = sorted(names)
    remap = {pid: j for j, pid in enumerate(ids)}
    arrays = [
        np.array([(remap[k], x, y) for k, x, y in rows], np.float64).reshape(-1, 3) for rows in per_image
    ]
    return arrays, len(ids), [names[k] for k in ids]


def keypoint_cells(kps: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """[k, 3] (id, x/W, y/H) -> (ids int [k], flat cell index int [k])."""
    r = np.clip(np.floor(kps[:, 2] * grid), 0, grid - 1).astype(np.int64)
    c = np.clip(np.floor(kps[:, 1] * grid), 0, grid - 1).astype(np.int64)
    return kps[:, 0].astype(np.int64), r * grid + c


def _baseline_predictions(cfg: PartsEvalConfig, cache: PartCache, data_root: str) -> dict[str, torch.Tensor]:
    """attention / k-means / spatial label maps long [num_images, G, G] from the frozen encoder."""
    ckpt = cfg.checkpoint or cache.meta.get("producer", {}).get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise UserError(
            f"the encoder baselines need the part checkpoint ({ckpt or 'the cache names none'} not "
            "found): pass --checkpoint or --no-baselines"
        )
    device = resolve_device(cfg.device)
    encoder, _, _ = load_part_model(ckpt, device)
    g, n = cache.grid, cache.num_parts
    dataset = ImageFolderDataset(data_root, transform=full_image_transform(encoder.img_size))
    workers = worker_plan(cfg.num_workers, device.type)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, **workers.loader_args)
    rng = np.random.default_rng(cfg.seed)
    per_image = max(1, math.ceil(cfg.kmeans_fit_tokens / len(dataset)))
    attn, tokens, sample = [], [], []
    keep_all = len(dataset) * encoder.grid_size**2 * encoder.embed_dim * 2 <= 512 * 2**20
    for batch in tqdm(loader, desc="encoder baselines", dynamic_ncols=True):
        feats = encoder(batch["image"].to(device))
        attn.append(attention_parts(feats["cls_attn"], g).cpu())
        patches = feats["patches"].float().cpu()
        if keep_all:
            tokens.append(patches.half())
        for x in patches:
            sample.append(x[rng.choice(x.shape[0], min(per_image, x.shape[0]), replace=False)].numpy())
    km = TokenKMeans(n, cfg.seed).fit(np.concatenate(sample))
    if keep_all:
        km_ids = torch.cat([resize_ids(km.predict(t), g) for t in tokens])
    else:  # a second encoder pass instead of holding every token
        km_ids = torch.cat(
            [resize_ids(km.predict(encoder(b["image"].to(device))["patches"]), g) for b in loader]
        )
    spatial = spatial_split(g, n).expand(len(dataset), g, g)
    return {
        "attention": torch.cat(attn),
        "kmeans": km_ids,
        "spatial": spatial,
        "_num_labels": {"attention": encoder.num_heads, "kmeans": n, "spatial": n},
    }


def metrics_path(cfg: PartsEvalConfig) -> Path:
    """Where ``parts eval`` writes, checked first (:mod:`semmae.utils.ownership`): ``--out`` (a file semmae wrote
    there is replaced only with ``--overwrite``), else ``part_metrics.json`` beside the cache (the cache's own
    report, replaced whenever semmae wrote it)."""
    from semmae.utils.ownership import check_output_file

    default = not cfg.out
    out = Path(cfg.cache) / "part_metrics.json" if default else Path(cfg.out)
    inputs = {
        "--data": cfg.data,
        "--masks": cfg.masks,
        "--keypoints": cfg.keypoints,
        "--checkpoint": cfg.checkpoint,
    }
    if not default:
        inputs["--cache"] = cfg.cache
    check_output_file(
        out, overwrite=default or cfg.overwrite, inputs=inputs, written_by_semmae=metrics_of_parts_eval
    )
    return out


def evaluate_parts(cfg: PartsEvalConfig) -> dict[str, Any]:
    """Score the cache (and baselines); write ``part_metrics.json``; return the metrics dict."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist")
    out = metrics_path(cfg)
    dataset = ImageFolderDataset(root)
    cache = PartCache.open(cfg.cache, dataset.relative_paths, root=root)
    g, n, num_images = cache.grid, cache.num_parts, len(dataset)
    preds = {"learned": torch.stack([cache[i][0].long() for i in range(num_images)])}
    num_labels = {"learned": n + 1}
    if cfg.baselines:
        base = _baseline_predictions(cfg, cache, str(root))
        num_labels.update(base.pop("_num_labels"))
        preds.update(base)
    results: dict[str, dict[str, Any]] = {m: {} for m in preds}
    notes: list[str] = []

    if cfg.masks:
        size = g * math.ceil(cfg.eval_size / g)
        masks = load_masks(cfg.masks, dataset.relative_paths, size)
        k = int(masks.max()) + 1
        if k < 2:
            raise UserError(f"the masks under {cfg.masks} hold no foreground label (all 0)")
        if k == 2:
            notes.append(
                "the masks hold a single foreground label: nmi/ari/miou measure object-vs-background agreement, "
                "not part identity (fg_iou is the meaningful score)"
            )
        rep = size // g
        ceilings = []
        scorers = {m: PartScorer(k, num_labels[m]) for m in preds}
        if cfg.baselines:
            scorers["ceiling"] = PartScorer(k, k)
        for i in range(num_images):
            for m, p in preds.items():
                scorers[m].add(masks[i], np.kron(p[i].numpy(), np.ones((rep, rep), np.int64)))
            if cfg.baselines:
                ceil = majority_per_cell(masks[i], g, k)
                ceilings.append(ceil)
                scorers["ceiling"].add(masks[i], np.kron(ceil, np.ones((rep, rep), np.int64)))
        for m, s in scorers.items():
            results.setdefault(m, {}).update(s.result())
        if ceilings:  # the true labels on the grid (background included): how many parts an image really has
            usage = usage_from_ids(torch.from_numpy(np.stack(ceilings)).reshape(num_images, -1), k)
            results["ceiling"].update({key: usage[key] for key in USAGE_KEYS})

    if not cfg.masks and not cfg.keypoints:
        notes.append(
            "no --masks or --keypoints: no ground truth, so only how many parts each image uses is reported "
            "(parts_used, largest_share: the collapse check, beside the baselines)"
        )
    if cfg.keypoints:
        kps, num_kp, _ = load_keypoints(cfg.keypoints, dataset.relative_paths, root)
        scorers = {m: KeypointScorer(num_kp, num_labels[m]) for m in preds}
        ceiling = KeypointScorer(num_kp, num_kp) if cfg.baselines else None
        for i in range(num_images):
            ids, cells = keypoint_cells(kps[i], g)
            for m, p in preds.items():
                scorers[m].add(ids, p[i].reshape(-1).numpy()[cells])
            if ceiling is not None and ids.size:
                majority = {}
                for cell in np.unique(cells):
                    majority[cell] = np.bincount(ids[cells == cell]).argmax()
                ceiling.add(ids, np.array([majority[c] for c in cells]))
        if ceiling is not None:
            scorers["ceiling"] = ceiling
        for m, s in scorers.items():
            results.setdefault(m, {}).update(s.result())

    for m, p in preds.items():  # how many parts each method's segmentation uses per image (collapse check)
        usage = usage_from_ids(p.reshape(num_images, -1), num_labels[m])
        results[m].update({k: usage[k] for k in USAGE_KEYS})
    ordered = {m: results[m] for m in METHODS if m in results}
    ordered["meta"] = {
        "cache": str(cfg.cache),
        "data": str(cfg.data),
        "masks": cfg.masks,
        "keypoints": cfg.keypoints,
        "grid": g,
        "num_parts": n,
        "images": num_images,
        "producer": cache.meta.get("producer", {}),
        "notes": notes,
        "written_by": "semmae parts eval",
    }
    atomic_write_json(out, sealed_json(ordered))
    ordered["meta"]["written_to"] = str(out)
    return ordered


def format_table(metrics: dict[str, Any]) -> str:
    """A fixed-width table: one row per method, one column per metric present."""
    methods = [m for m in METHODS if m in metrics]
    cols = [c for c in COLUMNS if any(c in metrics[m] for m in methods)]
    lines = ["method     " + " ".join(f"{c:>12}" for c in cols)]
    for m in methods:
        vals = [metrics[m].get(c, float("nan")) for c in cols]
        lines.append(f"{m:<10} " + " ".join(f"{v:12.3f}" for v in vals))
    return "\n".join(lines)
