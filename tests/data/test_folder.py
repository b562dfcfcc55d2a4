import pytest
from _helpers import write_image_folder

from semmae.data.folder import ImageFolderDataset, file_list_digest
from semmae.errors import BadImageError, UserError


def test_stable_order_labels_and_digest(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("b", "a"), per_class=2)
    ds = ImageFolderDataset(root)
    assert ds.classes == ["a", "b"]
    assert ds.relative_paths == ["a/img0.png", "a/img1.png", "b/img0.png", "b/img1.png"]
    assert ds.file_list_digest == file_list_digest(ImageFolderDataset(root).relative_paths)
    item = ds[3]
    assert item["label"] == 1 and item["index"] == 3 and item["skipped"] == 0
    assert item["image"].mode == "RGB"


def test_missing_root_file_root_and_no_classes(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        ImageFolderDataset(tmp_path / "f.png")
    with pytest.raises(UserError, match="no class subfolders.*1 images lie directly"):
        ImageFolderDataset(tmp_path)


def test_empty_class_folder_is_an_error(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("a",), per_class=1)
    (root / "empty").mkdir()
    with pytest.raises(UserError, match="empty.*holds no images"):
        ImageFolderDataset(root)


def test_bad_image_raises_or_is_skipped_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("a",), per_class=3)
    (root / "a" / "img1.png").write_bytes(b"garbage")
    with pytest.raises(BadImageError, match="img1.png"):
        ImageFolderDataset(root)[1]
    ds = ImageFolderDataset(root, skip_bad_images=True)
    item = ds[1]
    assert item["index"] == 2 and item["skipped"] == 1
    assert ds[0]["skipped"] == 0
