"""Robust image decoding: every readable image becomes 8-bit RGB, an unreadable one a :class:`BadImageError`.

Handles what real datasets contain: grayscale (L, LA, 1), palette (P, with or without transparency), CMYK,
16/32-bit integer and float images (scaled to 8 bit, not clipped), alpha (composited onto white), and EXIF
orientation (phone photos are stored rotated).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from semmae.errors import BadImageError

#: extensions that count as images (torchvision's list)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: image files an ImageFolder leaves out, as torchvision's does (so sample indices match it): counted and named in
#: one note (:func:`skipped_note`) by ``data check``, the folder reader and ``data subset``, never dropped silently
SKIPPED_EXTENSIONS = (".gif",)


def skipped_note(count: int, where: object) -> str | None:
    """The one-line note for ``count`` skipped files (:data:`SKIPPED_EXTENSIONS`) under ``where``, or ``None``."""
    if not count:
        return None
    kinds = "/".join(SKIPPED_EXTENSIONS)
    return (
        f"note: {where}: skipped {count} {kinds} file{'s' if count != 1 else ''}; an ImageFolder reads "
        f"{', '.join(IMAGE_EXTENSIONS)} only (as torchvision's does): convert them to .png to use them"
    )


def describe_mode(img: Image.Image) -> str | None:
    """Name the unusual-but-valid property of an image (for ``semmae data check``), or None if plain RGB."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return "high bit depth"
    if mode == "CMYK":
        return "CMYK"
    if mode == "P":
        return "palette"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        return "alpha"
    if mode in ("L", "1"):
        return "grayscale"
    w, h = img.size
    if min(w, h) <= 2 or max(w, h) / max(1, min(w, h)) >= 10:
        return "tiny or very thin"
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255) else 255.0
        if mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        else:
            arr = arr / hi * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if mode == "RGB" else img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully and return an RGB PIL image, EXIF-rotated.

    Raises:
        BadImageError: the file is missing, truncated, not an image, or too large to decode safely.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img) or img
                if img.width == 0 or img.height == 0:
                    raise BadImageError(path, "image has zero size")
                return _to_rgb(img)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadImageError(path, reason) from None


def open_for_check(path: str | Path) -> tuple[Image.Image, str | None]:
    """Decode like :func:`load_rgb` but also report the image's unusual property (``describe_mode``)."""
    try:
        with Image.open(path) as raw:
            raw.load()
            kind = describe_mode(raw)
    except Exception as e:  # noqa: BLE001
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadImageError(path, reason) from None
    return load_rgb(path), kind
