"""Issue 37: every pack.json field a reader trusts is verified against the shards by `data check`, and the cheap
ones by the reader itself (pretraining opens a pack with :meth:`PackedImages.open`); packs made before the
manifest recorded digests are checked as far as their shards allow, with a note on what could not be."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers import one_error_line, write_image_folder

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset, file_list_digest
from semmae.data.packed import PackedImages, pack_dataset
from semmae.data.part_cache import PartCache
from semmae.errors import UserError

SIDE = 16


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A 3-class ImageFolder, its 3-part cache (every id 0..3 present), and a pack of both."""
    root = tmp_path_factory.mktemp("pm")
    folder = write_image_folder(root / "imgs", classes=("a", "b", "c"), per_class=2, size=20)
    files = ImageFolderDataset(folder).relative_paths
    writer = PartCache.create(root / "parts.cache", files, grid=4, num_parts=3)
    ids = torch.arange(len(files) * 16).reshape(len(files), 4, 4) % 4  # 3 = the no-part id
    writer.write(0, ids, torch.rand(len(files), 4, 4, generator=torch.Generator().manual_seed(0)))
    writer.finalize()
    pack_dataset(folder, root / "pack", SIDE, parts=root / "parts.cache", shard_size=4, progress=False)
    pack_dataset(folder, root / "plain", SIDE, shard_size=4, progress=False)
    return root


@pytest.fixture
def pack(made, tmp_path):
    """A fresh copy of the pack (with part cells), to edit."""
    import shutil

    return shutil.copytree(made / "pack", tmp_path / "pack")


def _edit_manifest(pack, edit):
    meta = json.loads((pack / "pack.json").read_text())
    edit(meta)
    (pack / "pack.json").write_text(json.dumps(meta))


def _refused(pack, capsys, *needles):
    """The reader refuses the pack and `data check` names the problem in one line (exit 2)."""
    with pytest.raises(UserError, match="repack it"):
        PackedImages.open(pack)
    assert main(["data", "check", "--data", str(pack)]) == 2
    return one_error_line(capsys, str(pack), *needles)


def _swap_classes(meta):
    meta["classes"][0], meta["classes"][1] = meta["classes"][1], meta["classes"][0]


def test_a_new_pack_records_digests_and_checks_clean(pack, capsys):
    assert set(json.loads((pack / "pack.json").read_text())["digests"]) == {
        "side",
        "num_images",
        "classes",
        "file_list_digest",
        "parts",
    }
    assert main(["data", "check", "--data", str(pack)]) == 0
    out = capsys.readouterr()
    assert "every checksum matches" in out.out and out.err == ""


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_swap_classes, "pack.json's classes differ from what was packed"),
        (lambda m: m["parts"].update(num_parts=2), "parts (grid, num_parts) differ"),  # same bit split
        (lambda m: m["parts"].update(num_parts=6), "parts (grid, num_parts) differ"),
        (lambda m: m.update(classes=[*m["classes"], "d"]), "classes differ"),
    ],
    ids=["classes-reordered", "fewer-parts", "more-parts", "extra-class"],
)
def test_an_edited_trusted_field_is_refused(pack, capsys, edit, needle):
    _edit_manifest(pack, edit)
    _refused(pack, capsys, needle)


@pytest.mark.parametrize("edit", ["extra-line", "swapped-lines", "consistent-hand-edit"])
def test_an_edited_file_list_is_refused(pack, capsys, edit):
    files = (pack / "files.txt").read_text().splitlines()
    if edit == "extra-line":
        (pack / "files.txt").write_text("\n".join([*files, "c/extra.png"]) + "\n")
        _refused(pack, capsys, "files.txt lists 7 files, pack.json 6 images")
        return
    files[0], files[1] = files[1], files[0]  # same count, same classes
    (pack / "files.txt").write_text("\n".join(files) + "\n")
    if edit == "swapped-lines":
        _refused(pack, capsys, "files.txt is not the file list that was packed")
        return
    # the manifest edited to match (digest and its own digest too): only the shards can tell
    _edit_manifest(pack, lambda m: m.update(file_list_digest=file_list_digest(files)))
    _edit_manifest(pack, lambda m: m["digests"].update(file_list_digest=_digest(m, "file_list_digest")))
    PackedImages.open(pack)  # the cheap checks agree with the edited manifest
    assert main(["data", "check", "--data", str(pack)]) == 2
    one_error_line(capsys, "shard-000000.tar: image 0 has path 'a/img0.png' in the shard, files.txt says")


def _digest(meta, key):
    from semmae.data.packed import field_digests

    return field_digests(meta)[key]


def _without_digests(meta):
    del meta["digests"]


def test_a_pack_without_digests_still_opens_and_checks_what_its_shards_allow(pack, made, tmp_path, capsys):
    _edit_manifest(pack, _without_digests)
    PackedImages.open(pack)
    assert main(["data", "check", "--data", str(pack)]) == 0
    note = one_error_line(capsys, "note:", "made before pack.json recorded digests", "parts.num_parts (3)")
    assert "at most 3" in note
    # without part cells everything it trusts is checked against the shards: no note
    import shutil

    plain = shutil.copytree(made / "plain", tmp_path / "plain")
    _edit_manifest(plain, _without_digests)
    assert main(["data", "check", "--data", str(plain)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_swap_classes, "image 0 (a/img0.png) has label 0, which pack.json's classes name 'b'"),
        (lambda m: m.update(classes=[*m["classes"], "d"]), "pack.json lists 4 classes, its images have 3"),
    ],
    ids=["classes-reordered", "extra-class"],
)
def test_a_pack_without_digests_refuses_edited_classes(pack, capsys, edit, needle):
    _edit_manifest(pack, lambda m: (_without_digests(m), edit(m)))
    _refused(pack, capsys, needle)


def test_a_pack_without_digests_refuses_fewer_parts_than_its_shards_hold(pack, capsys):
    _edit_manifest(pack, lambda m: (_without_digests(m), m["parts"].update(num_parts=2)))
    PackedImages.open(pack)  # nothing cheap can tell: the bit split is the same
    assert main(["data", "check", "--data", str(pack)]) == 2
    one_error_line(capsys, "holds part id 3, pack.json says 2 parts", "repack it")


def test_an_edited_index_size_is_named_by_data_check(pack, capsys):
    """The index agrees with the shards sample by sample (here: an image's size on disk, a hand edit with the
    manifest's checksums updated to match)."""
    import hashlib

    path = pack / "index" / "shard-000001.npy"
    index = np.load(path)
    index[0, 3] += 1
    np.save(path, index)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_manifest(pack, lambda m: m["shards"][1].update(index_sha256=digest))
    PackedImages.open(pack)
    assert main(["data", "check", "--data", str(pack)]) == 2
    one_error_line(capsys, "shard-000001.tar: image 4 has size", "its index says")


def test_pretraining_refuses_a_pack_with_an_edited_manifest(pack, tmp_path, capsys):
    """The reader that trains: `semmae pretrain --data PACK` stops in one line before its first step."""
    _edit_manifest(pack, _swap_classes)
    argv = [
        "pretrain",
        "--data",
        str(pack),
        "--out",
        str(tmp_path / "run"),
        "--model",
        "mae_vit_micro_patch8",
    ]
    argv += [
        "--img-size",
        "32",
        "--precision",
        "fp32",
        "--no-progress",
        "--vis-every",
        "0",
        "--device",
        "cpu",
    ]
    argv += [
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--masking",
        "adaptive",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
    ]
    assert main(argv) == 2
    one_error_line(capsys, str(pack), "classes differ from what was packed")
    assert not (tmp_path / "run" / "log.jsonl").exists()
