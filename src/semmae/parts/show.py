"""``semmae parts show``: a PNG grid, one row per image: image | ground truth (with ``--masks``) | learned parts |
raw-attention parts (argmax over the encoder's last-layer CLS-attention heads, the iBOT baseline of paper Fig. 4) |
foreground score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semmae.data.folder import ImageFolderDataset
from semmae.errors import UserError
from semmae.parts.checkpoint import load_part_model
from semmae.parts.config import PartsShowConfig
from semmae.parts.inference import full_image_transform, infer_parts
from semmae.parts.viz import denormalize, grid_image, overlay, save_png
from semmae.utils.distributed import resolve_device


def _label_map(path: Path, size: int) -> torch.Tensor:
    """A ground-truth label PNG resized (nearest) to the drawn image size, long [size, size]."""
    from PIL import Image

    if not path.is_file():
        raise UserError(f"no ground-truth mask {path} for this image (--masks must mirror the --data tree)")
    with Image.open(path) as m:
        return torch.from_numpy(np.asarray(m.resize((size, size), Image.NEAREST), dtype=np.int64))


def show_parts(cfg: PartsShowConfig) -> Path:
    from semmae.utils.ownership import check_output_file, png_written_by_semmae

    check_output_file(
        cfg.out,
        overwrite=cfg.overwrite,
        inputs={"--data": cfg.data, "--checkpoint": cfg.checkpoint, "--masks": cfg.masks},
        written_by_semmae=png_written_by_semmae,
    )
    device = resolve_device(cfg.device)
    encoder, model, _ = load_part_model(cfg.checkpoint, device)
    dataset = ImageFolderDataset(cfg.data, transform=full_image_transform(encoder.img_size))
    if len(dataset) == 0:
        raise UserError(f"no images under {cfg.data}")
    k = min(cfg.num_images, len(dataset))
    picks = np.sort(np.random.default_rng(cfg.seed).choice(len(dataset), k, replace=False))
    images = torch.stack([dataset[int(i)]["image"] for i in picks]).to(device)
    grid = cfg.grid or encoder.grid_size
    res = infer_parts(encoder, model, images, grid)
    img = denormalize(images)
    fg = (res["fg"][..., None].cpu().numpy() * 255).astype(np.uint8)
    s = img.shape[1]
    fg_img = np.repeat(np.repeat(fg, s // grid + 1, axis=1)[:, :s], s // grid + 1, axis=2)[:, :, :s]
    fg_img = np.broadcast_to(fg_img, img.shape).copy()
    truth = []
    if cfg.masks:
        labels = torch.stack([_label_map(Path(cfg.masks) / dataset.relative_paths[int(i)], s) for i in picks])
        truth = [overlay(img, labels, int(labels.max()) + 1)]
    panel = grid_image(
        [
            img,
            *truth,
            overlay(img, res["part_ids"], model.spec.num_parts),
            overlay(img, res["attn_ids"], encoder.num_heads),
            fg_img,
        ]
    )
    save_png(panel, cfg.out)
    return Path(cfg.out)
