"""Fine-grained transfer datasets (paper Table 6) as ImageFolder trees: ``OUT/{train,val}/<class>/<image>``,
made of symbolic links to the release's images (nothing is copied).

* CUB-200-2011: ``images.txt`` (``<id> <relative path>``), ``train_test_split.txt`` (``<id> <1=train|0=test>``),
  ``image_class_labels.txt`` (``<id> <class id>``), optional ``classes.txt`` (``<class id> <name>``), images
  under ``images/``.
* Stanford Cars: ``devkit/cars_train_annos.mat`` + ``cars_test_annos_withlabels.mat`` (fields ``fname``,
  ``class``) with images in ``cars_train/`` and ``cars_test/``, or the single ``cars_annos.mat`` (fields
  ``relative_im_path``, ``class``, ``test``); class names from ``devkit/cars_meta.mat`` / ``class_names``.
* iNaturalist 2019: ``train2019.json`` and ``val2019.json`` (COCO style: ``images`` with ``id``/``file_name``,
  ``annotations`` with ``image_id``/``category_id``, ``categories``), images relative to the release root.

Class folders are named ``<zero-padded id>_<name>`` so ImageFolder's sorted order follows the release's ids.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.utils.io import atomic_write_json

Entry = tuple[str, Path, str]  # (split "train"|"val", absolute image path, class folder name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "class"


def _read_table(path: Path, columns: int) -> list[list[str]]:
    if not path.is_file():
        raise UserError(f"{path} is missing (expected in the release layout)")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns:
            raise UserError(f"{path}:{lineno}: expected {columns} columns, got {line!r}")
        rows.append(parts)
    return rows


def cub_entries(root: Path) -> list[Entry]:
    """CUB-200-2011 release -> entries (its official train/test split; test becomes val)."""
    images = {i: p for i, p in _read_table(root / "images.txt", 2)}
    split = {i: s for i, s in _read_table(root / "train_test_split.txt", 2)}
    labels = {i: c for i, c in _read_table(root / "image_class_labels.txt", 2)}
    names: dict[str, str] = {}
    if (root / "classes.txt").is_file():
        names = {c: n for c, n in _read_table(root / "classes.txt", 2)}
    width = max(3, len(str(max((int(c) for c in labels.values()), default=0))))
    out = []
    for i, rel in images.items():
        if i not in split or i not in labels:
            raise UserError(f"CUB image id {i} ({rel}) has no split or no label entry")
        c = labels[i]
        name = names.get(c, Path(rel).parent.name)
        name = re.sub(r"^\d+\.", "", name)  # CUB names already carry "001." - keep one id prefix
        folder = f"{int(c):0{width}d}_{_safe(name)}"
        out.append(("train" if split[i].strip() == "1" else "val", root / "images" / rel, folder))
    return out


def _mat_records(path: Path, key: str) -> list[dict[str, Any]]:
    from scipy.io import loadmat

    if not path.is_file():
        raise UserError(f"{path} is missing (expected in the Stanford Cars release layout)")
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # noqa: BLE001 - scipy raises several kinds for a bad file
        raise UserError(f"cannot read {path} as a MATLAB file: {e}") from None
    if key not in mat:
        raise UserError(f"{path} has no '{key}' entry")
    recs = mat[key]
    recs = [recs] if hasattr(recs, "_fieldnames") else list(recs)  # squeeze_me turns one record into a scalar
    return [{f: getattr(r, f) for f in r._fieldnames} for r in recs]


def _cars_names(paths: list[Path]) -> list[str]:
    import numpy as np
    from scipy.io import loadmat

    for p in paths:
        if p.is_file():
            mat = loadmat(str(p), squeeze_me=True)
            if "class_names" in mat:
                return [str(n) for n in np.atleast_1d(mat["class_names"])]
    return []


def cars_entries(root: Path) -> list[Entry]:
    """Stanford Cars (devkit layout or the single ``cars_annos.mat``) -> entries (official train/test split)."""
    out: list[tuple[str, Path, int]] = []
    if (root / "cars_annos.mat").is_file():
        for r in _mat_records(root / "cars_annos.mat", "annotations"):
            out.append(
                ("val" if int(r["test"]) else "train", root / str(r["relative_im_path"]), int(r["class"]))
            )
        names = _cars_names([root / "cars_annos.mat", root / "devkit" / "cars_meta.mat"])
    else:
        for split, mat, folder in (
            ("train", "cars_train_annos.mat", "cars_train"),
            ("val", "cars_test_annos_withlabels.mat", "cars_test"),
        ):
            for r in _mat_records(root / "devkit" / mat, "annotations"):
                out.append((split, root / folder / str(r["fname"]), int(r["class"])))
        names = _cars_names([root / "devkit" / "cars_meta.mat"])
    width = max(3, len(str(max((c for *_, c in out), default=0))))

    def folder(c: int) -> str:
        name = names[c - 1] if 0 < c <= len(names) else ""
        return f"{c:0{width}d}_{_safe(name)}" if name else f"{c:0{width}d}"

    return [(s, p, folder(c)) for s, p, c in out]


def inat_entries(
    root: Path, train_json: str = "train2019.json", val_json: str = "val2019.json"
) -> list[Entry]:
    """iNaturalist 2019 COCO-style annotation files -> entries."""
    out: list[Entry] = []
    for split, name in (("train", train_json), ("val", val_json)):
        path = root / name
        if not path.is_file():
            raise UserError(f"{path} is missing (expected the iNaturalist 2019 annotation file)")
        try:
            ann = json.loads(path.read_text())
            images = {im["id"]: im["file_name"] for im in ann["images"]}
            cats = {c["id"]: c.get("name", "") for c in ann.get("categories", [])}
            pairs = [(a["image_id"], a["category_id"]) for a in ann["annotations"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(
                f"{path} is not an iNaturalist annotation file ({type(e).__name__}: {e})"
            ) from None
        width = max(4, len(str(max(list(cats) + [c for _, c in pairs], default=0))))
        for image_id, cat in pairs:
            if image_id not in images:
                raise UserError(f"{path}: annotation refers to unknown image id {image_id}")
            label = f"{int(cat):0{width}d}" + (f"_{_safe(cats[cat])}" if cats.get(cat) else "")
            out.append((split, root / images[image_id], label))
    return out


CONVERTERS = {"cub": cub_entries, "cars": cars_entries, "inat": inat_entries}


def convert_dataset(
    name: str,
    root: str | Path,
    out: str | Path,
    skip_missing: bool = False,
    before_write: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write ``out/{train,val}/<class>/<image>`` symlinks for release ``name`` at ``root``; returns a summary.
    ``before_write`` runs once the release is read, before the first write (``semmae convert`` claims ``out``).

    Re-running is safe: existing links to the same file are kept; a link to another file is refused.
    """
    if name not in CONVERTERS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(CONVERTERS)}")
    root, out = Path(root).resolve(), Path(out)
    if not root.is_dir():
        raise UserError(f"release folder {root} does not exist")
    entries = CONVERTERS[name](root)
    if not entries:
        raise UserError(f"no images listed in the {name} release at {root}")
    missing = [p for _, p, _ in entries if not p.is_file()]
    if missing and not skip_missing:
        raise UserError(
            f"{len(missing)} listed image(s) are missing, first: {missing[0]} (use --skip-missing to leave them out)"
        )
    missing_set = set(missing)
    if before_write is not None:
        before_write()
    counts: Counter = Counter()
    used: set[Path] = set()
    for split, src, folder in entries:
        if src in missing_set:
            continue
        dst = out / split / folder / src.name
        if dst in used:  # two listed images with the same file name in one class: keep both
            dst = dst.with_name(f"{src.parent.name}_{src.name}")
        used.add(dst)
        for folder_path in (
            out / split,
            dst.parent,
        ):  # a link there would put the links into a folder elsewhere
            if folder_path.is_symlink():
                raise UserError(
                    f"{folder_path} is a link semmae convert did not make (its links would land in "
                    f"{os.path.realpath(folder_path)}); remove it or use an empty --out"
                )
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            if dst.is_symlink() and Path(os.readlink(dst)) == src:
                counts[split] += 1
                continue
            raise UserError(f"{dst} already exists and is not a link to {src}; use an empty --out")
        os.symlink(src, dst)
        counts[split] += 1
    summary = {
        "dataset": name,
        "root": str(root),
        "train_images": counts["train"],
        "val_images": counts["val"],
        "classes": len({f for _, _, f in entries}),
        "missing": len(missing),
    }
    atomic_write_json(out / "convert.json", summary)
    return summary


#: the owner marker of a folder ``semmae convert`` made (:mod:`semmae.utils.ownership`)
KIND, VERB = "dataset", "convert"


def convert_release(
    name: str, root: str | Path, out: str | Path, skip_missing: bool = False
) -> dict[str, Any]:
    """``semmae convert``: :func:`convert_dataset` into ``out`` claimed by the ownership rule
    (:func:`semmae.utils.ownership.claim_output_folder`): new, empty, or a folder an earlier ``semmae convert``
    made (a rerun keeps its links), never a user's folder (its ``convert.json`` would be replaced) or a run's; one
    writer at a time (``<out>/.semmae.lock``)."""
    from semmae.data.subset import hold_output
    from semmae.utils import ownership

    out = Path(out)

    def claim(own_lock: bool = False) -> ownership.Owner:
        return ownership.claim_output_folder(
            out,
            kind=KIND,
            verb=VERB,
            what="a tree semmae convert wrote",
            inputs={"--root": str(root)},
            rerun=True,
            own_lock=own_lock,
        )

    claim()  # refused before the lock file is made
    created = not out.exists()
    try:
        with hold_output(out, f"converted dataset {out}", VERB, lambda: claim(own_lock=True)):
            owner = claim(own_lock=True)
            first = lambda: ownership.start_output_folder(out, owner, ("train", "val", "convert.json"))  # noqa: E731
            return convert_dataset(name, root, out, skip_missing, before_write=first)
    except UserError:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before its first write: no trace
        raise
