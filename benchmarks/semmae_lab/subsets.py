"""Class-balanced subsets of a dataset split for a pipeline's budget (:mod:`semmae.data.subset`)."""

from __future__ import annotations

from pathlib import Path

from semmae.data.subset import make_subset

#: written by the reproduction harness into the subsets it made before the library owned subsets (same files)
LEGACY_DONE_FILE = ".complete"


def split_subset(src: str | Path, dst: str | Path, per_class: int, seed: int = 0) -> Path:
    """``per_class`` images of every class of ``src`` under ``dst`` (:func:`semmae.data.subset.make_subset`; a short
    class gives all it has), or ``src`` itself for ``per_class <= 0``."""
    src, dst = Path(src), Path(dst)
    if per_class <= 0:
        return src
    if (dst / LEGACY_DONE_FILE).exists():
        return dst
    return make_subset(src, dst, per_class, seed=seed, allow_fewer=True).out
