"""Dataset layouts, label conventions and user errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from semmae.data.synth import make_synthetic_dataset
from semmae.errors import UserError
from semmae.eval.segmentation.dataset import SegmentationDataset, read_label, resolve_source
from semmae.eval.segmentation.transforms import EvalTransform

from .conftest import write_pairs


def test_ade20k_release_is_detected(fake_ade):
    src = resolve_source(fake_ade)  # the parent folder: ADEChallengeData2016/ is entered
    assert src.root.name == "ADEChallengeData2016"
    assert (src.layout, src.num_classes, src.reduce_zero_label) == ("pairs", 150, True)
    assert src.class_names[0] == "thing1" and src.class_names[149] == "thing150"
    ds = SegmentationDataset(src, "train", EvalTransform(0, 2048))
    assert len(ds) == 4 and [p[0].suffix for p in ds.pairs] == [".jpg"] * 4
    item = ds[0]
    assert item["image"].shape == (3, 40, 48) and item["label"].shape == (40, 48)


def test_reduce_zero_label_mapping(tmp_path):
    raw = np.array([[0, 1, 2], [150, 255, 7]], dtype=np.uint8)
    Image.fromarray(raw, mode="L").save(tmp_path / "l.png")
    reduced = read_label(tmp_path / "l.png", 150, True, 255)
    assert reduced.tolist() == [[255, 0, 1], [149, 255, 6]]
    plain = read_label(tmp_path / "l.png", 256 - 100, False, 255)
    assert plain[0].tolist() == [0, 1, 2]


def test_out_of_range_and_rgb_labels_are_user_errors(tmp_path):
    Image.fromarray(np.full((4, 4), 9, np.uint8), mode="L").save(tmp_path / "l.png")
    with pytest.raises(UserError, match="value 9 outside"):
        read_label(tmp_path / "l.png", 5, False, 255)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="single-channel"):
        read_label(tmp_path / "rgb.png", 5, False, 255)


def test_generic_pairs_need_a_class_count_and_every_label(tmp_path):
    root = write_pairs(tmp_path / "p", split_names=("train", "val"), num_labels=4, image_ext="png")
    with pytest.raises(UserError, match="--num-classes"):
        resolve_source(root)
    src = resolve_source(root, num_classes=4)
    assert not src.reduce_zero_label and src.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert len(SegmentationDataset(src, "val", EvalTransform(0, 64))) == 2
    next((root / "annotations" / "train").glob("*.png")).unlink()
    with pytest.raises(UserError, match="1 image.*no label map"):
        SegmentationDataset(src, "train", EvalTransform(0, 64))
    with pytest.raises(UserError, match="cannot tell the layout"):
        resolve_source(tmp_path)


def test_synth_layout_background_is_a_class(tmp_path):
    make_synthetic_dataset(tmp_path / "s", num_images=10, size=16, progress=False)
    src = resolve_source(tmp_path / "s")
    assert src.layout == "synth" and not src.reduce_zero_label
    assert src.num_classes == 7 and src.class_names[0] == "background"
    ds = SegmentationDataset(src, "val", EvalTransform(0, 64))
    labels = np.concatenate([ds[i]["label"].numpy().ravel() for i in range(len(ds))])
    assert labels.min() == 0 and labels.max() < 7 and (labels == 0).any()
