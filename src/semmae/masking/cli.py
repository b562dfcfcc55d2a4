"""``semmae masks show``: semantic-guided masks along the alpha schedule (paper Fig. 1 and Fig. 3) as a PNG."""

from __future__ import annotations

from dataclasses import dataclass

from semmae.config import add_verb, add_verb_group, option
from semmae.errors import UserError

DEFAULT_SIZE = 224  # without a part cache that records its size


@dataclass
class MasksShowConfig:
    data: str = option("", "ImageFolder root of the images to draw (e.g. a synthetic set's train/ folder)")
    cache: str | None = option(
        None,
        "part cache of that folder (semmae parts export); without it the synthetic set's "
        "masks/ folder is used, else a quadrant fallback",
    )
    out: str = option("masks.png", "output PNG")
    overwrite: bool = option(False, "replace a figure semmae drew earlier at --out (never any other file)")
    num_images: int = option(4, "images (rows) to draw")
    alphas: tuple[float, ...] = option(
        (0.0, 0.25, 0.5, 0.75, 1.0), "alphas (columns); 0 = per part, 1 = whole parts"
    )
    mask_ratio: float = option(0.75, "fraction of patches masked")
    img_size: int | None = option(
        None,
        f"image side the images are resized to (default: the part cache's export size, else {DEFAULT_SIZE})",
    )
    patch_size: int = option(16, "patch side in pixels")
    seed: int = option(0, "random seed of the masks")

    def validate(self) -> None:
        if not self.data:
            raise UserError("--data is required: the image folder to draw")
        if not 0.0 < self.mask_ratio < 1.0:
            raise UserError(f"--mask-ratio must be in (0, 1), got {self.mask_ratio}")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise UserError(f"--alphas must lie in [0, 1], got {self.alphas}")
        if self.num_images < 1:
            raise UserError(f"--num-images must be >= 1, got {self.num_images}")
        if self.patch_size < 1 or (self.img_size is not None and self.img_size % self.patch_size):
            raise UserError(
                f"--img-size {self.img_size} must be a multiple of --patch-size {self.patch_size}"
            )


def show(cfg: MasksShowConfig) -> int:
    from semmae.masking.figure import cache_image_size, draw_masks_figure, load_examples
    from semmae.utils.ownership import check_output_file, png_written_by_semmae

    check_output_file(
        cfg.out,
        overwrite=cfg.overwrite,
        inputs={"--data": cfg.data, "--cache": cfg.cache},
        written_by_semmae=png_written_by_semmae,
    )
    size = cfg.img_size or (cache_image_size(cfg.cache) if cfg.cache else None) or DEFAULT_SIZE
    if size % cfg.patch_size:
        raise UserError(
            f"the part cache {cfg.cache} was exported at {size} px, not a multiple of --patch-size "
            f"{cfg.patch_size}: pass --img-size"
        )
    images, part_ids, source, no_part_id = load_examples(
        cfg.data, cfg.cache, cfg.num_images, size, cfg.patch_size
    )
    title = f"semantic-guided masking, ratio {cfg.mask_ratio:g}; parts from {source}"
    path = draw_masks_figure(
        images,
        part_ids,
        list(cfg.alphas),
        cfg.mask_ratio,
        cfg.patch_size,
        cfg.seed,
        cfg.out,
        no_part_id,
        title,
    )
    print(f"wrote {path} ({len(images)} images x {len(cfg.alphas)} alphas at {size} px; parts from {source})")
    return 0


def register(sub) -> None:
    actions = add_verb_group(sub, "masks", "Semantic-guided masking (Algorithm 1)")
    add_verb(
        actions,
        "show",
        MasksShowConfig,
        show,
        "Draw masks along the alpha schedule (paper Fig. 1 and 3)",
        "Draw, for a few images, the part map and the image with its masked patches greyed out for several "
        "alphas (paper Fig. 1 and 3). Example: semmae masks show --data synth/train --out masks.png",
    )
