"""The pretraining dataset: images plus, when a part cache is given, their part ids and foreground scores on the
model's patch grid, cropped and flipped together (:class:`~semmae.data.transforms.JointPartTransform`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCache
from semmae.data.transforms import JointPartTransform, train_transform
from semmae.errors import UserError


class PartImageDataset(Dataset):
    """ImageFolder + optional part cache for MAE/SemMAE pretraining.

    Args:
        root: ImageFolder tree. cache: a :class:`PartCache` (or its path) made for exactly this tree, or None;
            its grid must be the model's patch grid ``img_size // patch_size`` (a UserError otherwise).
        img_size, patch_size: the model's input side and patch (part maps are read on its grid).
        scale, hflip: MAE augmentation (RandomResizedCrop(scale) + flip); ``scale=None`` disables cropping: the
            whole image is resized to ``img_size`` (+ flip), SemMAE's pretraining augmentation.
        skip_bad_images: see :class:`ImageFolderDataset`.
        geometry: a v2 geometric transform replacing crop/flip for image and map alike (evaluation views,
            :func:`~semmae.data.transforms.eval_geometry`); None = the pretraining augmentation.
        normalize: False = images stay uint8, for :func:`~semmae.data.transforms.normalize_batch` in the training
            process (pretraining does this: a quarter of the bytes through the loader, no float work in workers).

    Item: ``{"image" [3, S, S], "label", "index", "skipped"}`` plus ``"part_ids"`` long ``[L]`` and ``"fg"``
    float ``[L]`` when a cache is given.
    """

    def __init__(
        self,
        root: str | Path,
        cache: PartCache | str | Path | None,
        img_size: int,
        patch_size: int,
        scale: tuple[float, float] | None = (0.2, 1.0),
        hflip: bool = True,
        skip_bad_images: bool = False,
        geometry=None,
        normalize: bool = True,
    ):
        self.images = ImageFolderDataset(
            root,
            skip_bad_images=skip_bad_images,
            bad_image_hint="; pass --skip-bad-images to train past unreadable files (`semmae data check` lists them)",
        )
        if cache is not None and not isinstance(cache, PartCache):
            cache = PartCache.open(cache, self.images.relative_paths, root=root)
        elif cache is not None:
            cache.check_matches(self.images.relative_paths, root=root)
        grid = img_size // patch_size
        if cache is not None and cache.grid != grid:
            # refused, not resampled: a coarser map stretched onto the model's grid gives blocky parts
            raise UserError(
                f"part cache {cache.path} has a {cache.grid}x{cache.grid} grid, the model's patch grid is "
                f"{grid}x{grid} ({img_size} px / patch {patch_size}); re-export it with "
                f"`semmae parts export --grid {grid}`"
            )
        self.cache = cache
        self.joint = JointPartTransform(
            img_size, patch_size, scale=scale, hflip=hflip, geometry=geometry, normalize=normalize
        )
        self.plain = train_transform(img_size, scale=scale, hflip=hflip, normalize=normalize)  # no cache

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> list[str]:
        return self.images.classes

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, i, skipped = self.images.load(index)
        item: dict[str, Any] = {"label": self.images.samples[i][1], "index": i, "skipped": skipped}
        if self.cache is None:
            item["image"] = self.plain(img)
            return item
        part, fg = self.cache[i]
        item["image"], item["part_ids"], item["fg"] = self.joint(img, part, fg)
        return item
