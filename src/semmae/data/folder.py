"""ImageFolder datasets (the ImageNet layout ``root/<class>/<image>``) with a stable order and robust decoding.

The file order is deterministic (classes sorted, files sorted within a class, as torchvision's ``ImageFolder``),
so an image's index is stable across runs and machines: the part-map cache (:mod:`semmae.data.part_cache`) is keyed
by it and checks the file list's digest.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes, has_file_allowed_extension

from semmae.data.images import IMAGE_EXTENSIONS, SKIPPED_EXTENSIONS, load_rgb, skipped_note
from semmae.errors import BadImageError, UserError

#: the roots whose skipped files were noted in this process (a verb scans a folder more than once)
_noted: set[str] = set()


def scan_image_folder(root: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """List ``(path, class_index)`` for every image under ``root/<class>/``, sorted; refuse empty datasets/classes."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise UserError(
            f"dataset path {root} is a file, expected a folder of class folders (ImageFolder layout)"
        )
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError:
        loose = [
            p for p in root.iterdir() if p.is_file() and has_file_allowed_extension(p.name, IMAGE_EXTENSIONS)
        ]
        hint = f" ({len(loose)} images lie directly in it: put them in a class subfolder)" if loose else ""
        raise UserError(f"dataset folder {root} has no class subfolders{hint}") from None
    samples: list[tuple[str, int]] = []
    skipped = 0
    for cls in classes:
        files, gifs = [], 0
        for p in (root / cls).rglob("*"):
            if not p.is_file():
                continue
            if has_file_allowed_extension(p.name, IMAGE_EXTENSIONS):
                files.append(p)
            elif has_file_allowed_extension(p.name, SKIPPED_EXTENSIONS):
                gifs += 1
        if not files:
            only = f"; its {gifs} {'/'.join(SKIPPED_EXTENSIONS)} file(s) are skipped" if gifs else ""
            raise UserError(
                f"class folder {root / cls} holds no images ({', '.join(IMAGE_EXTENSIONS)}){only}"
            )
        skipped += gifs
        samples.extend((str(p), class_to_idx[cls]) for p in sorted(files))
    note = skipped_note(skipped, root)
    if note and str(root) not in _noted:
        _noted.add(str(root))
        print(note, file=sys.stderr, flush=True)
    return classes, samples


class ImageFolderDataset(Dataset):
    """An ImageFolder tree as a dataset of dicts.

    Args:
        root: folder of class folders.
        transform: applied to the RGB PIL image (e.g. :func:`semmae.data.transforms.eval_transform`).
        skip_bad_images: on an unreadable file, use the next readable image instead of raising; the item's
            ``skipped`` field counts the files passed over so the caller can report the total.
        bad_image_hint: appended to the :class:`BadImageError` of an unreadable file (e.g. how to skip them).

    Item: ``{"image": transform(pil), "label": int, "index": int, "skipped": int}`` - ``index`` is the index of
    the image actually returned (it differs from the requested one only when a bad file was skipped).
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        skip_bad_images: bool = False,
        bad_image_hint: str = "",
    ):
        self.root = Path(root)
        self.bad_image_hint = bad_image_hint
        self.classes, self.samples = scan_image_folder(self.root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def relative_paths(self) -> list[str]:
        return [Path(p).relative_to(self.root).as_posix() for p, _ in self.samples]

    @property
    def file_list_digest(self) -> str:
        return file_list_digest(self.relative_paths)

    def load(self, index: int) -> tuple[Image.Image, int, int]:
        """Decode image ``index``; returns ``(pil, actual_index, skipped)`` (see ``skip_bad_images``)."""
        n = len(self.samples)
        for skipped in range(n):
            i = (index + skipped) % n
            try:
                return load_rgb(self.samples[i][0]), i, skipped
            except BadImageError as e:
                if not self.skip_bad_images:
                    if self.bad_image_hint:
                        raise BadImageError(e.path, e.reason + self.bad_image_hint) from None
                    raise
        raise UserError(f"no readable image in {self.root}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, i, skipped = self.load(index)
        image = self.transform(img) if self.transform is not None else img
        return {"image": image, "label": self.samples[i][1], "index": i, "skipped": skipped}


def file_list_digest(relative_paths: list[str]) -> str:
    """SHA-256 of the newline-joined relative file list (what a part cache is checked against)."""
    # a file name that is not UTF-8 is kept as its bytes (surrogateescape), as the file system holds it
    return hashlib.sha256("\n".join(relative_paths).encode("utf-8", "surrogateescape")).hexdigest()
