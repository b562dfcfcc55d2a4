"""Drawings of semantic-guided masks along the alpha schedule: the paper's Figure 1 and Figure 3.

Each row is one image: its part map, then the image with the masked patches greyed out for each alpha
(alpha = 0: the same fraction of every part; alpha = 1: whole parts).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semmae.data.folder import ImageFolderDataset
from semmae.errors import UserError
from semmae.masking.semantic import semantic_guided_mask
from semmae.utils.content_seal import sealed_png
from semmae.utils.io import atomic_write_bytes

GREY = 0.5  # value of a masked patch, on a [0, 1] image


def _grid_resize(part_map: np.ndarray, grid: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer map ``[G, G]`` (or pixel mask) to ``[grid, grid]``."""
    return np.asarray(Image.fromarray(part_map.astype(np.uint8)).resize((grid, grid), Image.NEAREST))


def synth_mask_path(data: Path, relative_path: str) -> Path | None:
    """Ground-truth part mask of a synthetic-dataset image: ``out/masks/<split>/<rel>`` for ``out/<split>``."""
    candidate = data.parent / "masks" / data.name / relative_path
    candidate = candidate.with_suffix(".png")
    return candidate if candidate.is_file() else None


def fallback_part_map(grid: int) -> np.ndarray:
    """Without a cache or synthetic masks: the four quadrants of the grid as four parts."""
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    return (2 * (rows >= grid / 2) + (cols >= grid / 2)).astype(np.uint8)


def cache_image_size(cache: str | Path) -> int | None:
    """The image side a part cache was exported at (its producer's ``img_size``), None when it does not say."""
    from semmae.data.part_cache import PartCache

    size = PartCache.open(cache).meta.get("producer", {}).get("img_size")
    return int(size) if isinstance(size, int) and size > 0 else None


def load_examples(data: str | Path, cache: str | None, num_images: int, img_size: int, patch_size: int):
    """First ``num_images`` images (resized to ``img_size``) and their part maps on the patch grid.

    Returns:
        images float ``[N, S, S, 3]`` in [0, 1], part ids long ``[N, S/p, S/p]``, a description of the source,
        and the reserved "no part" id (None when unknown).
    """
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"--data {data} is not a folder")
    dataset = ImageFolderDataset(data)
    if len(dataset) == 0:
        raise UserError(f"--data {data} holds no images")
    grid = img_size // patch_size
    reader = None
    if cache:
        from semmae.data.part_cache import PartCache

        reader = PartCache.open(cache, dataset.relative_paths, root=data)
    images, maps, sources = [], [], set()
    for i in range(min(num_images, len(dataset))):
        pil, _, _ = dataset.load(i)
        images.append(np.asarray(pil.resize((img_size, img_size), Image.BICUBIC), dtype=np.float32) / 255.0)
        if reader is not None:
            part_map, source = reader[i][0].numpy(), "part cache"
        elif (mask := synth_mask_path(data, dataset.relative_paths[i])) is not None:
            part_map, source = np.asarray(Image.open(mask)), "synthetic ground-truth masks"
        else:
            part_map, source = fallback_part_map(grid), "quadrant fallback (no cache, no masks folder)"
        maps.append(_grid_resize(part_map, grid))
        sources.add(source)
    no_part_id = reader.no_part_id if reader is not None else None
    return np.stack(images), torch.from_numpy(np.stack(maps)).long(), ", ".join(sorted(sources)), no_part_id


def grey_out(image: np.ndarray, mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Image ``[S, S, 3]`` with the patches where ``mask [S/p, S/p]`` is True set to grey."""
    pixel_mask = np.kron(mask, np.ones((patch_size, patch_size), dtype=bool))
    out = image.copy()
    out[pixel_mask] = GREY
    return out


def draw_masks_figure(
    images: np.ndarray,
    part_ids: torch.Tensor,
    alphas: list[float],
    mask_ratio: float,
    patch_size: int,
    seed: int,
    out: str | Path,
    no_part_id: int | None = None,
    title: str = "",
) -> Path:
    """Write the figure PNG: per image, the part map and the masked image for every alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, grid = part_ids.shape[0], part_ids.shape[1]
    flat = part_ids.flatten(1)
    fig, axes = plt.subplots(n, len(alphas) + 2, figsize=(2.0 * (len(alphas) + 2), 2.0 * n), squeeze=False)
    for j, alpha in enumerate(alphas):
        g = torch.Generator().manual_seed(seed)  # same draws per alpha: only alpha changes between columns
        masks = semantic_guided_mask(flat, mask_ratio, alpha, g, no_part_id).view(n, grid, grid).numpy()
        for i in range(n):
            axes[i, j + 2].imshow(grey_out(images[i], masks[i], patch_size))
            if i == 0:
                axes[i, j + 2].set_title(f"alpha = {alpha:g}", fontsize=9)
    for i in range(n):
        axes[i, 0].imshow(images[i])
        axes[i, 1].imshow(part_ids[i].numpy(), cmap="tab10", interpolation="nearest", vmin=0, vmax=9)
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 1].set_title("parts", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": "semmae masks show"})
    plt.close(fig)
    atomic_write_bytes(out, sealed_png(buf.getvalue()))
    return Path(out)
