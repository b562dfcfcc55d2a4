"""``semmae data get imagenette|cub``: download a public dataset, verify its md5, unpack it into the layout the other
verbs read.

* **Imagenette** (``--size 160|320|full``): torchvision's :class:`~torchvision.datasets.Imagenette` downloads and
  checks the fast.ai archive (its URLs and md5 sums: ``Imagenette._ARCHIVES``); ``OUT`` becomes the archive's
  ``imagenette2-<size>/`` folder: ``OUT/train/<wnid>/*.JPEG``, ``OUT/val/<wnid>/*.JPEG`` (and the archive's
  ``noisy_imagenette.csv``), so ``--data OUT/train`` / ``OUT/val`` are ImageFolder roots.
* **CUB-200-2011**: the official ``CUB_200_2011.tgz`` (:data:`SOURCES`) through torchvision's
  ``download_and_extract_archive``; ``OUT/CUB_200_2011/`` is the release as unpacked, converted by
  ``semmae convert cub`` (:func:`semmae.data.convert.convert_dataset`) into ``OUT/train`` and ``OUT/val`` (the
  official train / test halves, class folders of symlinks into the release); beside them the files
  ``semmae parts eval --keypoints OUT`` reads (:func:`semmae.parts.evaluate.load_keypoints`): ``keypoints.csv``
  (``image_id,file,part_id,part_name,x,y,visible``, ``file`` relative to ``OUT/train`` or ``OUT/val``, e.g.
  ``001_Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg``; x, y in pixels of the original image),
  ``images.csv`` (``image_id,file,split,class_id,class_name,width,height,bbox_x,bbox_y,bbox_w,bbox_h``) and
  ``parts.csv``.

Ownership (:mod:`semmae.utils.ownership`): ``OUT`` must be new, empty, or a folder an earlier ``data get`` of the
same dataset made (its owner marker lists every entry; anything else in it refuses the folder in one line,
untouched). The archive is downloaded into ``OUT/downloads/`` and deleted once unpacked. Resumable: a rerun after an
interruption reuses an archive whose md5 matches, downloads a partial or damaged one again from the start
(torchvision writes the file from its first byte), redoes a half-finished unpack, and keeps what was already moved
into place; a finished folder (``get.json`` says ``complete``) is reported "already there" and nothing is written.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.utils import ownership

#: owner marker of a folder this verb made (:mod:`semmae.utils.ownership`)
KIND, VERB = "dataset", "data get"
#: the record of what the folder holds; ``complete`` once every step is done
RECORD = "get.json"
#: where the archive is downloaded and unpacked before its contents move into place (deleted at the end)
STAGING = "downloads"


@dataclass(frozen=True)
class Source:
    """One downloadable archive: its address, md5 sum and file name."""

    url: str
    md5: str
    filename: str


#: archives semmae downloads itself (Imagenette's come from torchvision's ``Imagenette._ARCHIVES``). CUB-200-2011:
#: the Caltech DATA record 65de6-vp158 (https://data.caltech.edu/records/65de6-vp158); the md5 is the one published
#: libraries check the same ``CUB_200_2011.tgz`` against (e.g. ``ContinualAI/avalanche``,
#: ``avalanche/benchmarks/datasets/cub200/cub200.py``): not verified against the record from here.
SOURCES: dict[str, Source] = {
    "cub": Source(
        url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
        md5="97eceeb196236b17998738112f37df78",
        filename="CUB_200_2011.tgz",
    ),
}

#: ``--size`` -> torchvision's size name
_TV_SIZES = {"160": "160px", "320": "320px", "full": "full"}


@dataclass
class GetReport:
    out: Path
    record: dict[str, Any]
    written: bool

    def format(self) -> str:
        r = self.record
        what = (
            f"{r.get('label', r.get('dataset'))}: {r.get('train_images', '?')} train + {r.get('val_images', '?')} "
            f"val images of {r.get('classes', '?')} classes"
        )
        if r.get("keypoints"):
            what += f", {r['keypoints']} keypoint rows (keypoints.csv)"
        return f"wrote {what} to {self.out}" if self.written else f"already there: {what} in {self.out}"


def imagenette_source(size: str) -> Source:
    """Imagenette's archive of ``size`` (160, 320, full) as torchvision lists it."""
    from torchvision.datasets import Imagenette

    url, md5 = Imagenette._ARCHIVES[_TV_SIZES[size]]
    return Source(url=url, md5=md5, filename=os.path.basename(url))


def default_out(dataset: str, size: str = "160") -> Path:
    """Where ``data get`` writes without ``--out``: ``data/imagenette2-160`` (the archive's folder name) or
    ``data/cub200``, relative to the current folder."""
    if dataset == "imagenette":
        return Path("data") / Path(imagenette_source(size).filename).name.removesuffix(".tgz")
    return Path("data") / "cub200"


def get_dataset(
    dataset: str, out: str | Path | None = None, size: str = "", progress: bool = True
) -> GetReport:
    """Download, verify and unpack ``dataset`` ("imagenette" or "cub") into ``out`` (see the module doc)."""
    if dataset not in ("imagenette", "cub"):
        raise UserError(f"unknown dataset {dataset!r}; choose one of imagenette, cub")
    size = size or ("160" if dataset == "imagenette" else "")
    source = imagenette_source(size) if dataset == "imagenette" else SOURCES[dataset]
    out = Path(out) if out else default_out(dataset, size)
    if dataset == "cub":
        label = "CUB-200-2011"
    else:
        label = "Imagenette (full size)" if size == "full" else f"Imagenette ({size} px)"
    wanted = {"dataset": dataset, "size": size or None}

    previous = _check_out(out, wanted)  # refuses a folder that is not ours before anything is written
    if (
        previous is not None
        and previous.get("complete")
        and all((out / s).is_dir() for s in ("train", "val"))
    ):
        return GetReport(out, previous, written=False)  # nothing written, not even a lock file

    from semmae.data.subset import hold_output

    created = not out.exists()
    try:
        with hold_output(out, f"dataset folder {out}", VERB, lambda: _check_out(out, wanted)):
            record = _get(out, dataset, source, {**wanted, "label": label}, progress)
    except UserError:
        if created:
            _drop_if_nothing_fetched(out)
        raise
    return GetReport(out, record, written=True)


# -- the folder ---------------------------------------------------------------------------------------------------
def _listing(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _check_out(out: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse an ``out`` that is not new, empty or this verb's own folder of the same dataset (one line, nothing
    written); returns its ``get.json`` record, or ``None``."""
    if out.is_symlink() and not out.exists():
        raise UserError(f"--out {out} is a broken link; give a folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if not out.is_dir():
        return None
    owner = ownership.read_owner(out)  # a damaged marker: MarkerError, one line, the folder left alone
    entries = ownership.current_entries(out)
    if owner is None:
        if not entries:
            return None
        raise UserError(
            f"--out {out} holds {_listing(entries)}, which semmae data get did not write; it writes only into a new "
            "or empty folder: choose another --out"
        )
    if not owner.describes(KIND, VERB):
        raise UserError(
            f"--out {out} is a folder of `semmae {owner.verb}`, not of `semmae data get`; choose another --out"
        )
    foreign = ownership.unlisted_entries(out, owner)
    if foreign:
        raise UserError(
            f"--out {out} holds {_listing(foreign)}, which semmae data get did not write; move them out or choose "
            "another --out"
        )
    record = _read_record(out)
    if record is not None and any(record.get(k) != v for k, v in wanted.items()):
        had = record.get("dataset"), record.get("size")
        raise UserError(
            f"--out {out} holds {' '.join(str(x) for x in had if x)}, not "
            f"{' '.join(str(x) for x in wanted.values() if x)}; choose another --out"
        )
    return record


def _read_record(out: Path) -> dict[str, Any] | None:
    path = ownership.safe_child(out, RECORD)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UserError(f"{path} is not a plain file; semmae data get leaves {out} alone")
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable; delete the folder {out} by hand and rerun") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} is damaged; delete the folder {out} by hand and rerun")
    return record


def _note(out: Path, owner: ownership.Owner) -> None:
    ownership.note_entries(out, owner)


def _get(out: Path, dataset: str, source: Source, record: dict[str, Any], progress: bool) -> dict[str, Any]:
    from semmae.utils.io import atomic_write_json

    owner = ownership.read_owner(out)
    if owner is None:  # the first write: the folder is this verb's from here on
        owner = ownership.Owner(kind=KIND, verb=VERB)
        ownership.write_owner(out, owner)
    record = {
        "written_by": "semmae data get",
        **record,
        "url": source.url,
        "md5": source.md5,
        "complete": False,
    }
    atomic_write_json(out / RECORD, record)
    staging = out / STAGING
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise UserError(f"{staging} is not a folder data get made; delete it by hand and rerun")
    staging.mkdir(exist_ok=True)
    _note(out, owner)
    if dataset == "imagenette":
        counts = _imagenette(out, staging, source, record["size"], owner, progress)
    else:
        counts = _cub(out, staging, source, owner, progress)
    shutil.rmtree(staging)
    owner.entries = [n for n in owner.entries if n != STAGING]
    _note(out, owner)
    ownership.write_owner(out, owner)
    record = {**record, **counts, "complete": True}
    atomic_write_json(out / RECORD, record)
    return record


def _drop_if_nothing_fetched(out: Path) -> None:
    """A folder this call created and left with nothing downloaded (an unreachable address): remove it again, so a
    failed first try leaves no trace. Anything else is kept for the rerun to resume."""
    if not out.is_dir():
        return
    staging = out / STAGING
    ours = {ownership.OWNER_NAME, RECORD, STAGING}
    names = set(os.listdir(out))
    if not names <= ours or (staging.is_dir() and any(staging.iterdir())):
        return
    for name in names:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    try:
        out.rmdir()
    except OSError:
        pass


def _move_into_place(unpacked: Path, out: Path, owner: ownership.Owner) -> None:
    """Move every top-level entry of ``unpacked`` into ``out`` (an entry already there was moved by an earlier,
    interrupted call: renames are atomic, so it is whole) and list it in the owner marker."""
    for name in sorted(os.listdir(unpacked)):
        target = ownership.safe_child(out, name)
        if name in (ownership.OWNER_NAME, RECORD, STAGING, ".semmae.lock"):
            raise UserError(f"the archive holds {name!r}, a name semmae data get keeps for itself")
        if target.exists() or target.is_symlink():
            continue
        os.replace(unpacked / name, target)
        _note(out, owner)


# -- downloading --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _download_bar(show: bool):
    """torchvision's download progress bar, or none (``show`` False: stderr is not a terminal, as every semmae
    progress bar; torchvision has no switch, so its module's ``tqdm`` is swapped for a disabled one meanwhile)."""
    import torchvision.datasets.utils as tv_utils

    bar = tv_utils.tqdm
    if not show:
        tv_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        tv_utils.tqdm = bar


def _fetch(call, archive: Path, source: Source, progress: bool) -> None:
    """Run torchvision's download-verify-unpack ``call``; its failures become one line (a corrupt download is
    deleted first, so a rerun fetches it again)."""
    import http.client
    import tarfile
    import urllib.error
    import zlib

    try:
        with _download_bar(progress):
            call()
    except urllib.error.HTTPError as e:
        raise UserError(f"cannot download {source.url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise UserError(
            f"cannot download {source.url}: {getattr(e.reason, 'strerror', None) or e.reason}; check the network "
            "and rerun"
        ) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise UserError(
            f"cannot download {source.url}: {type(e).__name__} {e}; rerun to download it again"
        ) from None
    except RuntimeError as e:
        if "corrupted" not in str(e):  # torchvision's "File not found or corrupted.": the md5 does not match
            raise
        size = archive.stat().st_size if archive.is_file() else 0
        archive.unlink(missing_ok=True)
        raise UserError(
            f"{source.url}: the download ({size} bytes) does not match md5 {source.md5}; deleted it: rerun to "
            "download it again (if it fails twice, the file at that address has changed)"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"cannot unpack {archive}: {e}; delete it and rerun") from None


def _imagenette(
    out: Path, staging: Path, source: Source, size: str, owner: ownership.Owner, progress: bool
) -> dict[str, Any]:
    """Imagenette through torchvision into ``staging``, its ``imagenette2-<size>/`` contents moved into ``out``."""
    if not all((out / s).is_dir() for s in ("train", "val")):
        from torchvision.datasets import Imagenette

        unpacked = staging / source.filename.removesuffix(".tgz")
        if unpacked.exists():  # a half-finished unpack: torchvision would take it for a finished one
            shutil.rmtree(unpacked)

        def download() -> None:
            Imagenette(str(staging), split="train", size=_TV_SIZES[size], download=True)
            Imagenette(str(staging), split="val", size=_TV_SIZES[size])

        try:
            _fetch(download, staging / source.filename, source, progress)
        except FileNotFoundError as e:
            raise UserError(f"the archive {source.url} has no train/ and val/ class folders: {e}") from None
        _move_into_place(unpacked, out, owner)
    return _folder_counts(out)


def _folder_counts(out: Path) -> dict[str, Any]:
    from semmae.data.folder import scan_image_folder

    classes, train = scan_image_folder(out / "train")
    _, val = scan_image_folder(out / "val")
    return {"train_images": len(train), "val_images": len(val), "classes": len(classes)}


# -- CUB-200-2011 -------------------------------------------------------------------------------------------------
def _cub(out: Path, staging: Path, source: Source, owner: ownership.Owner, progress: bool) -> dict[str, Any]:
    """The CUB archive unpacked into ``out/CUB_200_2011``, converted (``semmae convert cub``) and its keypoints
    written for ``parts eval``."""
    release = out / "CUB_200_2011"
    if not (release / "images.txt").is_file():
        from torchvision.datasets.utils import download_and_extract_archive

        unpacked = staging / "unpacked"
        if unpacked.exists():  # a half-finished unpack
            shutil.rmtree(unpacked)

        def download() -> None:
            download_and_extract_archive(
                source.url, str(staging), extract_root=str(unpacked), filename=source.filename, md5=source.md5
            )

        _fetch(download, staging / source.filename, source, progress)
        if not (unpacked / "CUB_200_2011" / "images.txt").is_file():
            raise UserError(
                f"the archive {source.url} holds no CUB_200_2011/images.txt: not the CUB-200-2011 release"
            )
        _move_into_place(unpacked, out, owner)
    summary = _convert_cub(release, out)
    _note(out, owner)
    rows = write_cub_keypoints(release, out)
    _note(out, owner)
    return {
        "train_images": summary["train_images"],
        "val_images": summary["val_images"],
        "classes": summary["classes"],
        "keypoints": rows,
    }


def _convert_cub(release: Path, out: Path) -> dict[str, Any]:
    """``semmae convert cub --root RELEASE --out OUT`` (:func:`semmae.data.convert.convert_dataset`: symlinks, safe
    to rerun); its summary."""
    from semmae.data.convert import convert_dataset

    return convert_dataset("cub", str(release), str(out), False)


def _table(path: Path, columns: int) -> list[list[str]]:
    """A CUB release table: one row per non-empty line, ``columns`` fields (the last takes the rest of the line)."""
    if not path.is_file():
        raise UserError(f"{path} is missing from the CUB-200-2011 release")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns:
            raise UserError(f"{path}:{lineno}: expected {columns} columns, got {line!r}")
        rows.append(parts)
    return rows


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_cub_keypoints(release: Path, out: Path) -> int:
    """``keypoints.csv``, ``images.csv`` and ``parts.csv`` in ``out`` for the CUB release ``release`` converted
    into ``out/train`` and ``out/val`` (``file`` = the image's path inside its split folder, as
    ``parts eval --data out/val`` lists it); returns the number of keypoint rows."""
    from PIL import Image

    from semmae.utils.io import atomic_write_text

    root = release.resolve()
    where: dict[str, tuple[str, str]] = {}  # link target -> (split, path inside the split folder)
    for split in ("train", "val"):
        for dirpath, _, files in os.walk(out / split):
            for name in files:
                link = Path(dirpath) / name
                if link.is_symlink():
                    where[os.readlink(link)] = (split, link.relative_to(out / split).as_posix())
    images = {i: rel for i, rel in _table(release / "images.txt", 2)}
    labels = {i: c for i, c in _table(release / "image_class_labels.txt", 2)}
    names = (
        {c: n for c, n in _table(release / "classes.txt", 2)} if (release / "classes.txt").is_file() else {}
    )
    boxes: dict[str, list[str]] = {}
    if (release / "bounding_boxes.txt").is_file():
        boxes = {i: box for i, *box in _table(release / "bounding_boxes.txt", 5)}
    part_names = {p: n for p, n in _table(release / "parts" / "parts.txt", 2)}
    image_rows, placed = [], {}
    for i, rel in images.items():
        hit = where.get(str(root / "images" / rel))
        if hit is None:
            continue  # left out by the conversion (a missing file)
        split, file = hit
        placed[i] = file
        with Image.open(root / "images" / rel) as im:
            w, h = im.size
        box = boxes.get(i, ["", "", "", ""])
        c = labels.get(i, "")
        image_rows.append([i, file, split, c, names.get(c, ""), w, h, *box[:4]])
    kp_rows = []
    for i, pid, x, y, visible in _table(release / "parts" / "part_locs.txt", 5):
        if i not in placed:
            continue
        seen = visible.strip() == "1"
        kp_rows.append(
            [i, placed[i], pid, part_names.get(pid, pid), x if seen else "", y if seen else "", visible]
        )
    atomic_write_text(
        out / "images.csv",
        _csv_text(
            ["image_id", "file", "split", "class_id", "class_name", "width", "height"]
            + ["bbox_x", "bbox_y", "bbox_w", "bbox_h"],
            image_rows,
        ),
    )
    atomic_write_text(
        out / "parts.csv", _csv_text(["part_id", "part_name"], [list(r) for r in part_names.items()])
    )
    atomic_write_text(
        out / "keypoints.csv",
        _csv_text(["image_id", "file", "part_id", "part_name", "x", "y", "visible"], kp_rows),
    )
    return len(kp_rows)
