"""Converters from tiny fake CUB-200-2011, Stanford Cars and iNaturalist 2019 releases to ImageFolder trees."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from semmae.cli import main
from semmae.data.convert import convert_dataset
from semmae.data.folder import ImageFolderDataset
from semmae.errors import UserError


def img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)


def fake_cub(root):
    rows = [
        (1, "001.Black_footed_Albatross/a.jpg", 1, 1),
        (2, "001.Black_footed_Albatross/b.jpg", 1, 0),
        (3, "002.Laysan_Albatross/c.jpg", 2, 1),
        (4, "002.Laysan_Albatross/d.jpg", 2, 0),
        (5, "002.Laysan_Albatross/e.jpg", 2, 1),
    ]
    (root / "images.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (root / "train_test_split.txt").write_text("".join(f"{i} {s}\n" for i, _, _, s in rows))
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    for _, p, _, _ in rows:
        img(root / "images" / p)
    return root


def test_cub(tmp_path):
    root = fake_cub(tmp_path / "CUB_200_2011")
    summary = convert_dataset("cub", root, tmp_path / "out")
    assert (summary["train_images"], summary["val_images"], summary["classes"]) == (3, 2, 2)
    train = ImageFolderDataset(tmp_path / "out" / "train")
    assert train.classes == ["001_Black_footed_Albatross", "002_Laysan_Albatross"]
    assert [os.path.basename(p) for p, _ in train.samples] == ["a.jpg", "c.jpg", "e.jpg"]
    assert [label for _, label in train.samples] == [0, 1, 1]
    link = tmp_path / "out" / "val" / "002_Laysan_Albatross" / "d.jpg"
    assert link.is_symlink() and os.readlink(link) == str(
        (root / "images/002.Laysan_Albatross/d.jpg").resolve()
    )
    assert convert_dataset("cub", root, tmp_path / "out") == summary  # re-running is a no-op


def test_cub_missing_image_is_refused_or_skipped(tmp_path):
    root = fake_cub(tmp_path / "cub")
    (root / "images/002.Laysan_Albatross/e.jpg").unlink()
    assert main(["convert", "cub", "--root", str(root), "--out", str(tmp_path / "o")]) == 2
    assert convert_dataset("cub", root, tmp_path / "o", skip_missing=True)["train_images"] == 2


def _records(fields, rows):
    dt = [(f, "O") for f in fields]
    return np.array([tuple(r) for r in rows], dtype=dt)


def test_stanford_cars_devkit_layout(tmp_path):
    root = tmp_path / "cars"
    (root / "devkit").mkdir(parents=True)
    savemat(
        root / "devkit" / "cars_meta.mat",
        {"class_names": np.array(["AM General Hummer 2000", "Acura RL 2012"], dtype=object)},
    )
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    savemat(
        root / "devkit" / "cars_train_annos.mat",
        {
            "annotations": _records(
                fields,
                [(1, 1, 5, 5, 1, "00001.jpg"), (1, 1, 5, 5, 2, "00002.jpg"), (1, 1, 5, 5, 2, "00003.jpg")],
            )
        },
    )
    savemat(
        root / "devkit" / "cars_test_annos_withlabels.mat",
        {"annotations": _records(fields, [(1, 1, 5, 5, 1, "00001.jpg")])},
    )
    for f in ("00001.jpg", "00002.jpg", "00003.jpg"):
        img(root / "cars_train" / f)
    img(root / "cars_test" / "00001.jpg")
    assert main(["convert", "cars", "--root", str(root), "--out", str(tmp_path / "out")]) == 0
    train = ImageFolderDataset(tmp_path / "out" / "train")
    assert train.classes == ["001_AM_General_Hummer_2000", "002_Acura_RL_2012"]
    assert [label for _, label in train.samples] == [0, 1, 1]
    val = ImageFolderDataset(tmp_path / "out" / "val")
    assert len(val) == 1 and os.readlink(val.samples[0][0]).endswith("cars_test/00001.jpg")


def test_stanford_cars_single_annos_file(tmp_path):
    root = tmp_path / "cars"
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    savemat(
        root.mkdir() or root / "cars_annos.mat",
        {
            "annotations": _records(
                fields, [("car_ims/000001.jpg", 1, 1, 5, 5, 1, 0), ("car_ims/000002.jpg", 1, 1, 5, 5, 1, 1)]
            ),
            "class_names": np.array(["Hummer"], dtype=object),
        },
    )
    for f in ("000001.jpg", "000002.jpg"):
        img(root / "car_ims" / f)
    s = convert_dataset("cars", root, tmp_path / "out")
    assert (s["train_images"], s["val_images"]) == (1, 1)
    assert (tmp_path / "out/train/001_Hummer/000001.jpg").is_symlink()


def test_inaturalist_2019(tmp_path):
    root = tmp_path / "inat"
    cats = [{"id": 0, "name": "Plantae 0"}, {"id": 1, "name": "Aves"}]
    train = {
        "images": [
            {"id": 10, "file_name": "train_val2019/Plants/0/a.jpg"},
            {"id": 11, "file_name": "train_val2019/Birds/1/b.jpg"},
        ],
        "annotations": [{"image_id": 10, "category_id": 0}, {"image_id": 11, "category_id": 1}],
        "categories": cats,
    }
    val = {
        "images": [{"id": 20, "file_name": "train_val2019/Birds/1/c.jpg"}],
        "annotations": [{"image_id": 20, "category_id": 1}],
        "categories": cats,
    }
    root.mkdir()
    (root / "train2019.json").write_text(json.dumps(train))
    (root / "val2019.json").write_text(json.dumps(val))
    for p in ("Plants/0/a.jpg", "Birds/1/b.jpg", "Birds/1/c.jpg"):
        img(root / "train_val2019" / p)
    s = convert_dataset("inat", root, tmp_path / "out")
    assert (s["train_images"], s["val_images"], s["classes"]) == (2, 1, 2)
    assert ImageFolderDataset(tmp_path / "out" / "train").classes == ["0000_Plantae_0", "0001_Aves"]
    assert ImageFolderDataset(tmp_path / "out" / "val").classes == ["0001_Aves"]
    (root / "val2019.json").write_text("{not json")
    with pytest.raises(Exception, match="not an iNaturalist annotation file"):
        convert_dataset("inat", root, tmp_path / "out2")


def test_a_class_folder_replaced_by_a_link_is_never_written_through(tmp_path):
    """A rerun of convert into its own tree where the user replaced a class folder by a link to their photos:
    refused in one line, nothing written into the linked folder."""
    root = fake_cub(tmp_path / "CUB_200_2011")
    out = tmp_path / "out"
    convert_dataset("cub", root, out)
    photos = tmp_path / "my_photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"mine")
    cls = out / "train" / "002_Laysan_Albatross"
    for p in cls.iterdir():
        p.unlink()
    cls.rmdir()
    os.symlink(photos, cls)
    with pytest.raises(UserError, match=r"is a link semmae convert did not make"):
        convert_dataset("cub", root, out)
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
