"""Image + label-map pairs for semantic segmentation (ADE20K release layout, any folder pair, the synthetic set).

Layouts:

- ``pairs`` (the ADE20K release): ``<root>/images/<split>/**/<name>.<ext>`` with labels at
  ``<root>/annotations/<split>/**/<name>.png`` (same relative path, ``.png``). An ``ADEChallengeData2016/`` folder
  inside ``root`` is entered automatically. Split names default to ``training``/``validation`` (or ``train``/``val``).
  ADE20K (detected by ``objectInfo150.txt`` or the folder name) defaults to 150 classes with ``reduce_zero_label``:
  raw 0 ("other") becomes the ignore index and 1..150 become 0..149.
- ``synth`` (``semmae data synth``): images at ``<root>/<split>/<class>/<name>.png``, part masks at
  ``<root>/masks/<split>/<class>/<name>.png`` (0 = background, 1..K = part type). Background is a real class, so
  there are K + 1 classes and no label is reduced.

Labels are single-channel 8-bit PNGs (mode ``L`` or palette ``P``, whose indices are the labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semmae.data.images import IMAGE_EXTENSIONS, load_rgb
from semmae.errors import UserError
from semmae.utils.io import read_json

ADE20K_CLASSES = 150
_SPLIT_NAMES = {"train": ("training", "train"), "val": ("validation", "val")}


@dataclass
class SegmentationSource:
    """A resolved dataset: the layout, class count/names and label convention, and the split folders."""

    root: Path
    layout: str
    num_classes: int
    class_names: list[str]
    reduce_zero_label: bool
    ignore_index: int

    def split_dirs(self, split: str, name: str = "") -> tuple[Path, Path]:
        """``(image_dir, label_dir)`` of ``split`` ('train' or 'val'); ``name`` overrides the folder name."""
        candidates = (name,) if name else _SPLIT_NAMES[split]
        for cand in candidates:
            if self.layout == "synth":
                img, lbl = self.root / cand, self.root / "masks" / cand
            else:
                img, lbl = self.root / "images" / cand, self.root / "annotations" / cand
            if img.is_dir() and lbl.is_dir():
                return img, lbl
        where = (
            "<root>/<split> and <root>/masks/<split>"
            if self.layout == "synth"
            else "<root>/images/<split> and <root>/annotations/<split>"
        )
        raise UserError(
            f"{self.root} has no {split} split: looked for {where} with <split> in {', '.join(candidates)}"
        )


def _is_ade20k(root: Path) -> bool:
    return (
        (root / "objectInfo150.txt").is_file()
        or (root / "objectInfo150.csv").is_file()
        or "ADEChallengeData2016" in root.name
    )


def _ade20k_names(root: Path) -> list[str] | None:
    """Class names from the release's ``objectInfo150.txt`` (tab-separated: Idx Ratio Train Val Name)."""
    path = root / "objectInfo150.txt"
    if not path.is_file():
        return None
    names = []
    for line in path.read_text(errors="replace").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 5:
            names.append(cols[4].split(",")[0].strip())
    return names if len(names) == ADE20K_CLASSES else None


def _synth_meta(root: Path) -> tuple[int | None, list[str] | None]:
    """``(K, class names incl. background)`` from ``synth.json`` (``num_part_types``, ``part_types``), or Nones."""
    path = root / "synth.json"
    if not path.is_file():
        return None, None
    meta = read_json(path)
    k = meta.get("num_part_types")
    names = meta.get("part_types")
    if k is None and names:
        k = len(names) - 1 if names[0] == "background" else len(names)
    if names and names[0] != "background":
        names = ["background", *names]
    return (int(k) if k is not None else None), (list(names) if names else None)


def resolve_source(
    root: str | Path,
    layout: str = "auto",
    num_classes: int = 0,
    reduce_zero_label: bool | None = None,
    ignore_index: int = 255,
) -> SegmentationSource:
    """Detect the layout and settle the class count, names and label convention of a dataset root."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a directory")
    if (root / "ADEChallengeData2016").is_dir() and not (root / "images").is_dir():
        root = root / "ADEChallengeData2016"
    if layout == "auto":
        if (root / "images").is_dir() and (root / "annotations").is_dir():
            layout = "pairs"
        elif (root / "masks").is_dir():
            layout = "synth"
        else:
            raise UserError(
                f"cannot tell the layout of {root}: expected images/ + annotations/ (ADE20K release "
                "layout) or masks/ (semmae data synth output); see docs/segmentation.md"
            )
    names: list[str] | None = None
    if layout == "synth":
        k, synth_names = _synth_meta(root)
        if not num_classes:
            if k is None:
                raise UserError(f"{root} has no synth.json naming the parts: pass --num-classes (parts + 1)")
            num_classes = k + 1
        if synth_names and len(synth_names) == num_classes:
            names = synth_names
        reduce_zero_label = bool(reduce_zero_label)
    else:
        ade = _is_ade20k(root)
        if reduce_zero_label is None:
            reduce_zero_label = ade
        if not num_classes:
            if not ade:
                raise UserError(
                    f"{root} is not an ADE20K release: state the number of classes with --num-classes"
                )
            num_classes = ADE20K_CLASSES
        if ade and num_classes == ADE20K_CLASSES:
            names = _ade20k_names(root)
    if num_classes > 255 or (num_classes > ignore_index):
        raise UserError(
            f"--num-classes {num_classes} collides with the ignore index {ignore_index} (8-bit labels)"
        )
    names = names or [f"class_{i}" for i in range(num_classes)]
    return SegmentationSource(root, layout, num_classes, names, bool(reduce_zero_label), ignore_index)


def list_pairs(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    """Sorted ``(image, label)`` pairs matched by relative path (label = same path with ``.png``)."""
    images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise UserError(f"no images under {image_dir}")
    pairs, missing = [], []
    for img in images:
        lbl = (label_dir / img.relative_to(image_dir)).with_suffix(".png")
        (pairs.append((img, lbl)) if lbl.is_file() else missing.append(lbl))
    if missing:
        raise UserError(f"{len(missing)} image(s) under {image_dir} have no label map, e.g. {missing[0]}")
    return pairs


def read_label(path: Path, num_classes: int, reduce_zero_label: bool, ignore_index: int) -> np.ndarray:
    """Read a label PNG as int64 ``[H, W]`` in ``[0, num_classes)`` or ``ignore_index``.

    With ``reduce_zero_label`` (ADE20K): 0 -> ignore, v -> v - 1. Any other out-of-range value is a user error.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I;16", "I"):
                raise UserError(
                    f"label map {path} has mode {im.mode}: expected a single-channel class-index PNG"
                )
            lbl = np.asarray(im, dtype=np.int64)
    except OSError as e:
        raise UserError(f"cannot read label map {path}: {e}") from None
    if reduce_zero_label:
        lbl = np.where((lbl == 0) | (lbl == ignore_index), ignore_index, lbl - 1)  # raw ignore stays ignored
    bad = (lbl >= num_classes) & (lbl != ignore_index)
    if bad.any():
        raise UserError(
            f"label map {path} holds value {int(lbl[bad].max())} outside [0, {num_classes - 1}] "
            f"(and not the ignore index {ignore_index}): check --num-classes / --reduce-zero-label"
        )
    return lbl


class SegmentationDataset(torch.utils.data.Dataset):
    """Item ``i`` -> ``{"image": float [3, H, W], "label": long [H', W'], "index": int}``.

    ``transform(pil_image, label int64 [H, W]) -> (image tensor, label tensor)`` applies the joint augmentation
    (train) or resizes only the image (eval: the label stays at full resolution and predictions are upsampled).
    """

    def __init__(self, source: SegmentationSource, split: str, transform: Callable, split_name: str = ""):
        self.source = source
        self.image_dir, self.label_dir = source.split_dirs(split, split_name)
        self.pairs = list_pairs(self.image_dir, self.label_dir)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        img_path, lbl_path = self.pairs[index]
        image = load_rgb(img_path)
        s = self.source
        label = read_label(lbl_path, s.num_classes, s.reduce_zero_label, s.ignore_index)
        if label.shape != (image.height, image.width):
            raise UserError(
                f"label map {lbl_path} is {label.shape[1]}x{label.shape[0]} but its image is "
                f"{image.width}x{image.height}"
            )
        image_t, label_t = self.transform(image, label)
        return {"image": image_t, "label": label_t, "index": index}
