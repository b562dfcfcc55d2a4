"""The built-in synthetic part dataset: procedural objects made of distinct parts, with ground-truth part masks.

It stands in for ImageNet + iBOT parts where nothing can be downloaded (the demo, the tests): every object class
is built from 3-6 distinct parts drawn from a shared vocabulary of part *types* (head, body, legs, tail, limbs,
top), each with its own colour and texture, placed at a random position, scale, tilt and flip on a textured,
cluttered background. Because part types are shared across classes, a mask's label means the same part in every
image, so masks score both per-image partitions and dataset-wide part identity (``semmae parts eval``) and serve as
a small segmentation benchmark.

Two styles (``--style``): ``class`` (default) gives each (class, part type) a fixed look, so a part's colour alone
names it - an easy set where even an untrained encoder passes enough to the head; ``random`` gives every part type a
fresh look in every image, so only shape and layout identify parts and classes - the harder test of what a
pretrained representation adds (benchmarks/results/segmentation-synthetic.md).

Layout written by :func:`make_synthetic_dataset`::

    out/train/<class>/<class>_00000.png      RGB image (ImageFolder layout)
    out/val/<class>/...
    out/masks/train/<class>/<class>_00000.png  uint8 label: 0 background, 1..K part type
    out/masks/val/...
    out/synth.json                          classes, part types, counts, generator settings
"""

from __future__ import annotations

import colorsys
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from semmae.data.config import STYLES
from semmae.errors import UserError
from semmae.utils.io import atomic_write_json

#: images are renamed into place in batches of this many files, after the owner markers of the run folders
#: around them (a demo's) record what each one is
_PUBLISH_EVERY = 128
PART_TYPES = ("head", "body", "legs", "tail", "limbs", "top")


@dataclass(frozen=True)
class PartShape:
    """One part in the object's frame (coordinates in [-1, 1]): a shape, its centre, radii and tilt (degrees)."""

    part: str
    shape: str  # "ellipse" | "rect" | "tri" (tip along the local +x axis)
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float = 0.0


# Parts listed back to front (later parts are painted over earlier ones).
OBJECT_CLASSES: dict[str, tuple[PartShape, ...]] = {
    "bird": (
        PartShape("tail", "tri", -0.72, 0.0, 0.3, 0.22, 180),
        PartShape("legs", "rect", 0.0, 0.55, 0.06, 0.25),
        PartShape("body", "ellipse", 0.0, 0.05, 0.55, 0.35),
        PartShape("limbs", "ellipse", -0.08, -0.02, 0.35, 0.15, -15),
        PartShape("head", "ellipse", 0.55, -0.32, 0.22, 0.22),
        PartShape("top", "tri", 0.55, -0.62, 0.14, 0.12, -90),
    ),
    "car": (
        PartShape("top", "rect", -0.05, -0.22, 0.45, 0.2),
        PartShape("body", "rect", 0.0, 0.15, 0.85, 0.25),
        PartShape("legs", "ellipse", -0.5, 0.45, 0.2, 0.2),
        PartShape("legs", "ellipse", 0.5, 0.45, 0.2, 0.2),
        PartShape("head", "ellipse", 0.78, 0.08, 0.1, 0.08),
    ),
    "fish": (
        PartShape("tail", "tri", -0.78, 0.0, 0.25, 0.32, 180),
        PartShape("top", "tri", -0.05, -0.38, 0.22, 0.18, -90),
        PartShape("body", "ellipse", 0.0, 0.0, 0.6, 0.35),
        PartShape("head", "ellipse", 0.45, 0.0, 0.2, 0.26),
    ),
    "robot": (
        PartShape("legs", "rect", -0.2, 0.62, 0.1, 0.3),
        PartShape("legs", "rect", 0.2, 0.62, 0.1, 0.3),
        PartShape("limbs", "rect", -0.55, 0.05, 0.1, 0.32),
        PartShape("limbs", "rect", 0.55, 0.05, 0.1, 0.32),
        PartShape("body", "rect", 0.0, 0.05, 0.4, 0.35),
        PartShape("top", "rect", 0.0, -0.75, 0.04, 0.14),
        PartShape("head", "rect", 0.0, -0.5, 0.26, 0.18),
    ),
    "turtle": (
        PartShape("legs", "ellipse", -0.4, 0.35, 0.13, 0.16),
        PartShape("legs", "ellipse", 0.4, 0.35, 0.13, 0.16),
        PartShape("tail", "tri", -0.72, 0.12, 0.16, 0.1, 180),
        PartShape("body", "ellipse", 0.0, 0.0, 0.6, 0.38),
        PartShape("head", "ellipse", 0.72, 0.0, 0.18, 0.15),
    ),
}
TEXTURES = ("plain", "stripes", "dots", "checker")


def _inside(shape: str, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    if shape == "ellipse":
        return lx**2 + ly**2 <= 1.0
    if shape == "rect":
        return (np.abs(lx) <= 1.0) & (np.abs(ly) <= 1.0)
    if shape == "tri":
        return (lx >= -1.0) & (lx <= 1.0) & (np.abs(ly) <= (1.0 - lx) / 2.0)
    raise ValueError(f"unknown shape {shape!r}")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))) * 255.0


def _texture(kind: str, xx: np.ndarray, yy: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """A pattern in [0, 1] over pixel coordinates."""
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(freq * (xx + 0.6 * yy) + phase)
    if kind == "dots":
        return ((np.sin(freq * xx + phase) * np.sin(freq * yy + phase)) > 0.5).astype(np.float64)
    if kind == "checker":
        return ((np.floor(freq * xx / math.pi + phase) + np.floor(freq * yy / math.pi)) % 2).astype(
            np.float64
        )
    return np.zeros_like(xx)


def _class_style(class_index: int, part_index: int) -> tuple[float, str, float]:
    """A fixed hue, texture and frequency for each (class, part type): parts are told apart by their look."""
    rng = np.random.default_rng(1000 + 97 * class_index + part_index)
    return float(rng.random()), TEXTURES[int(rng.integers(len(TEXTURES)))], float(rng.uniform(0.5, 1.4))


def render_object_image(
    class_name: str, size: int, rng: np.random.Generator, style: str = "class"
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of ``class_name``: returns RGB uint8 ``[size, size, 3]`` and its part mask uint8 ``[size, size]``.

    ``style="class"``: each (class, part type) has a fixed hue and texture, so a part is recognisable by its look.
    ``style="random"``: every part type gets a fresh hue and texture in every image, so neither a part's type nor the
    object's class shows in its colours - only shape and layout tell them apart.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    class_index = list(OBJECT_CLASSES).index(class_name)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # textured background: a few low-frequency waves in two colours, plus unlabeled clutter blobs
    bg_a, bg_b = (
        _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8)),
        _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8)),
    )
    wave = np.zeros((size, size))
    for _ in range(3):
        fx, fy = rng.normal(0, 0.25, size=2)
        wave += np.sin(fx * xx + fy * yy + rng.uniform(0, 2 * math.pi))
    wave = (wave - wave.min()) / max(np.ptp(wave), 1e-6)
    image = bg_a * wave[..., None] + bg_b * (1 - wave[..., None])
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.04, 0.12) * size]
        blob = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        image[blob] = _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9))
    mask = np.zeros((size, size), dtype=np.uint8)

    half = rng.uniform(0.28, 0.45) * size  # object half-width in pixels
    ox, oy = rng.uniform(half, size - half, size=2)
    tilt = math.radians(rng.uniform(-15, 15))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    # pixel -> object frame
    dx, dy = (xx - ox) / half, (yy - oy) / half
    u = (math.cos(tilt) * dx + math.sin(tilt) * dy) * flip
    v = -math.sin(tilt) * dx + math.cos(tilt) * dy
    image_styles: dict[int, tuple[float, str, float]] = {}  # style="random": one look per part type per image
    for p in OBJECT_CLASSES[class_name]:
        part_id = PART_TYPES.index(p.part) + 1
        rx, ry = p.rx * rng.uniform(0.85, 1.15), p.ry * rng.uniform(0.85, 1.15)
        a = math.radians(p.angle)
        px, py = u - p.cx, v - p.cy
        lx = (math.cos(a) * px + math.sin(a) * py) / rx
        ly = (-math.sin(a) * px + math.cos(a) * py) / ry
        region = _inside(p.shape, lx, ly)
        if style == "class":
            hue, texture, freq = _class_style(class_index, part_id)
        else:
            if part_id not in image_styles:
                image_styles[part_id] = (
                    float(rng.random()),
                    TEXTURES[int(rng.integers(len(TEXTURES)))],
                    float(rng.uniform(0.5, 1.4)),
                )
            hue, texture, freq = image_styles[part_id]
        base = _hsv(hue + rng.normal(0, 0.03), rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.95))
        dark = base * rng.uniform(0.35, 0.6)
        pattern = _texture(texture, xx, yy, freq, rng.uniform(0, 2 * math.pi))[..., None]
        colour = base * (1 - pattern) + dark * pattern
        image[region] = colour[region]
        mask[region] = part_id
    image += rng.normal(0, 6.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def make_synthetic_dataset(
    out: str | Path,
    num_images: int = 500,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.2,
    num_classes: int | None = None,
    progress: bool = True,
    style: str = "class",
) -> dict:
    """Write the synthetic part dataset (see the module docstring). Deterministic for ``seed``; returns synth.json."""
    out = Path(out)
    classes = list(OBJECT_CLASSES)[: num_classes or len(OBJECT_CLASSES)]
    if num_images < 2 * len(classes):
        raise UserError(f"--num-images must be at least {2 * len(classes)} (two per class for train and val)")
    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must lie in (0, 1), got {val_fraction}")
    if style not in STYLES:
        raise UserError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    from semmae.data.subset import hold_output

    # one writer per folder, never inside a run that is still going (data subset's rule)
    with hold_output(out, f"synthetic dataset {out}", "data synth", lambda: _check_out(out)):
        return _write(out, classes, num_images, size, seed, val_fraction, progress, style)


def _check_out(out: Path) -> None:
    """``--out`` is new, empty, or what an interrupted ``data synth`` left (its split folders of its own classes,
    holding image files a run folder around them, a demo's, recorded it wrote): never a folder of a user's, whose files or classes the synthetic images would
    join or replace, and no link anywhere in it (an image written there would land where it points)."""
    if (out / "synth.json").exists():
        raise UserError(f"{out} already holds a synthetic dataset; choose another --out or delete it")
    if not out.is_dir():
        return
    from semmae.utils.ownership import current_entries

    splits = {"train", "val"}
    folders = {"": splits | {"masks"}, "masks": splits}
    folders.update({s: set(OBJECT_CLASSES) for s in splits})
    folders.update({f"masks/{s}": set(OBJECT_CLASSES) for s in splits})
    files = {f"{m}{s}/{c}": c for m in ("", "masks/") for s in splits for c in OBJECT_CLASSES}
    for rel in [*folders, *files]:
        folder = out / rel if rel else out
        if not folder.is_dir() or (rel and folder.is_symlink()):
            continue  # a link is refused as an entry of the folder above
        stray = [
            n
            for n in current_entries(folder)
            if not _synth_entry(folder / n, folders.get(rel), files.get(rel))
        ]
        if stray:
            shown = ", ".join(stray[:4]) + (f" and {len(stray) - 4} more" if len(stray) > 4 else "")
            raise UserError(
                f"--out {out} holds {shown}{' in ' + rel if rel else ''}, which data synth did not write (or "
                "cannot tell from a file of yours: an interrupted synth is not continued, delete it and rerun); it "
                "writes only into a new or empty folder: choose another --out"
            )


def _synth_entry(path: Path, folders: set[str] | None, class_name: str | None) -> bool:
    """Whether ``path`` is what ``data synth`` writes where it lies: one of ``folders`` (a real folder), or an
    image ``<class_name>_NNNNN.png`` (a plain file); never a link."""
    if path.is_symlink():
        return False
    if folders is not None:
        return path.name in folders and path.is_dir()
    if not (re.fullmatch(rf"{re.escape(str(class_name))}_\d{{5}}\.png", path.name) and path.is_file()):
        return False
    # an image by synth's name is its own only where the run folder around it (a demo's) recorded writing it:
    # a folder of your own photos named `bird_00001.png` is never taken for an interrupted synth's
    from semmae.utils.io import written_by_the_run_around

    return written_by_the_run_around(path)


def _write(
    out: Path,
    classes: list[str],
    num_images: int,
    size: int,
    seed: int,
    val_fraction: float,
    progress: bool,
    style: str,
) -> dict:
    from semmae.utils.io import check_may_replace, note_identity_as, note_written

    seeds = np.random.SeedSequence(seed).spawn(num_images)
    counts = {"train": 0, "val": 0}
    per_class = [
        num_images // len(classes) + (1 if c < num_images % len(classes) else 0) for c in range(len(classes))
    ]
    jobs = []
    for c, name in enumerate(classes):
        n_val = max(1, int(round(per_class[c] * val_fraction)))
        for i in range(per_class[c]):
            jobs.append((name, "val" if i < n_val else "train", f"{name}_{i:05d}.png"))
    # images are saved one by one: a run folder holding ``out`` (the demo's) records every one of them first,
    # after checking that none would replace a file it did not write
    targets = [out / sub / split / name / file for name, split, file in jobs for sub in (".", "masks")]
    check_may_replace(*targets)
    note_written(*targets)
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    batch: list[tuple[Path, str]] = []  # (final path, temporary) written and not yet renamed

    def publish() -> None:
        # what each file is goes into the markers before the renames (one write per batch): a kill at any point
        # leaves only files semmae knows, or temporaries it sweeps
        note_identity_as(batch)
        for path, tmp in batch:
            os.replace(tmp, path)
        batch.clear()

    try:
        for (name, split, file), ss in tqdm(list(zip(jobs, seeds)), desc="synth", disable=not progress):
            image, mask = render_object_image(name, size, np.random.default_rng(ss), style)
            for folder, arr in ((out / split / name, image), (out / "masks" / split / name, mask)):
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{file}.", suffix=".tmp", dir=folder)
                os.fchmod(fd, mode)  # mkstemp's 0600 -> what open() would have made
                with os.fdopen(fd, "wb") as fh:
                    Image.fromarray(arr).save(fh, format="PNG")
                batch.append((folder / file, tmp))
            counts[split] += 1
            if len(batch) >= _PUBLISH_EVERY:
                publish()
        publish()
    except OSError as e:
        for _, tmp in batch:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write the synthetic dataset under {out}: {e.strerror or e}") from None
    info = {
        "classes": classes,
        "part_types": ["background", *PART_TYPES],
        "num_part_types": len(PART_TYPES),
        "num_images": num_images,
        "size": size,
        "seed": seed,
        "val_fraction": val_fraction,
        "style": style,
        "splits": counts,
        "masks": "masks/<split>/<class>/<file>.png, uint8: 0 background, 1..num_part_types part type",
    }
    atomic_write_json(out / "synth.json", info)
    return info
