"""Issue 37: `--overwrite` of a pack or a part cache acts only on a folder semmae made, deletes exactly its own files,
and never follows a symlink out of the folder."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from _helpers import folder_snapshot, one_error_line, write_image_folder

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.packed import PackedImages, pack_dataset
from semmae.data.part_cache import PartCache
from semmae.errors import UserError


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("own") / "imgs", per_class=2, size=20)


def _pack_cli(images, out, *extra):
    argv = ["data", "pack", "--data", str(images), "--out", str(out), "--side", "16", "--num-workers", "0"]
    return main([*argv, *extra])


def _refused_both_ways(images, out, capsys, *needles, watch=None):
    watch = watch or out
    before = folder_snapshot(watch)
    for extra in ((), ("--overwrite",)):
        assert _pack_cli(images, out, *extra) == 2
        one_error_line(capsys, str(out), "not a pack", *needles)
        assert folder_snapshot(watch) == before


def test_a_users_shards_without_a_manifest_are_left_alone(images, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "shard-0001.tar").write_bytes(b"my own archive")
    _refused_both_ways(images, out, capsys, "holds shard-0001.tar")
    (out / "shard-0001.tar").rename(out / "shard-000001.tar")  # a pack's own name, but no pack.json
    _refused_both_ways(images, out, capsys, "has no readable pack.json")


def test_a_pack_whose_index_leads_out_of_it_is_not_cleared(images, tmp_path, capsys):
    out = tmp_path / "pack"
    pack_dataset(images, out, 16, shard_size=2, progress=False)
    user = tmp_path / "user"
    shutil.copytree(out / "index", user)  # a user's folder of files named like a pack's index files
    shutil.rmtree(out / "index")
    (out / "index").symlink_to(user, target_is_directory=True)
    _refused_both_ways(images, out, capsys, "holds index", watch=tmp_path)
    assert sorted(p.name for p in user.iterdir()) == ["shard-000000.npy", "shard-000001.npy"]


def test_a_pack_file_that_is_a_symlink_is_not_trusted(images, tmp_path, capsys):
    out = tmp_path / "pack"
    pack_dataset(images, out, 16, shard_size=4, progress=False)
    mine = tmp_path / "list.txt"
    mine.write_text("my list\n")
    (out / "files.txt").unlink()
    (out / "files.txt").symlink_to(mine)
    _refused_both_ways(images, out, capsys, "holds files.txt", watch=tmp_path)


def test_overwrite_of_a_pack_deletes_only_its_files(images, tmp_path, capsys):
    out = tmp_path / "pack"
    pack_dataset(images, out, 16, shard_size=1, progress=False)  # 4 shards
    assert _pack_cli(images, out, "--shard-size", "4", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["files.txt", "index", "pack.json", "shard-000000.tar"]
    assert sorted(p.name for p in (out / "index").iterdir()) == ["shard-000000.npy"]
    PackedImages.open(out)


def _write_cache(images, out, overwrite=False):
    files = ImageFolderDataset(images).relative_paths
    w = PartCache.create(out, files, grid=2, num_parts=3, overwrite=overwrite)
    w.write(0, np.zeros((len(files), 2, 2), dtype=np.int64), np.zeros((len(files), 2, 2)))
    return w.finalize()


def _overwrite_refused(images, out, root, match):
    """``--overwrite`` of the cache ``out`` is refused with a message matching ``match``; ``root`` (holding ``out``)
    stays byte-identical."""
    before = folder_snapshot(root)
    with pytest.raises(UserError, match=match):
        _write_cache(images, out, overwrite=True)
    assert folder_snapshot(root) == before


def test_an_unfinished_cache_folder_of_a_users_list_is_left_alone(images, tmp_path):
    partial = tmp_path / "c.parts.partial"
    partial.mkdir()
    (partial / "files.txt").write_text("my list\n")  # a cache's file name, no export's meta.json
    before = folder_snapshot(partial)
    with pytest.raises(UserError, match=r"c.parts.partial has no readable meta.json.*not a part cache"):
        _write_cache(images, tmp_path / "c.parts")
    assert folder_snapshot(partial) == before


@pytest.mark.parametrize("meta", [{"epochs": 3}, {"format_version": 2, "grid": 4, "epochs": 3}])
def test_a_users_folder_with_a_meta_json_is_left_alone(images, tmp_path, meta):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps(meta))
    before = folder_snapshot(out)
    with pytest.raises(UserError, match="not a part cache"):
        _write_cache(images, out, overwrite=True)
    assert folder_snapshot(out) == before


def test_a_cache_file_that_is_a_symlink_is_not_trusted(images, tmp_path):
    out = tmp_path / "c.parts"
    _write_cache(images, out)
    mine = tmp_path / "mine.bin"
    mine.write_bytes((out / "codes.u8").read_bytes())
    (out / "codes.u8").unlink()
    (out / "codes.u8").symlink_to(mine)
    _overwrite_refused(images, out, tmp_path, r"c.parts holds codes.u8.*not a part cache")


def test_overwrite_of_a_cache_deletes_its_files_and_a_killed_exports_temporaries(images, tmp_path):
    out = tmp_path / "c.parts"
    _write_cache(images, out)
    (out / ".meta.json.k2j4_x9q.tmp").write_text("{")  # an atomic write a killed export never renamed
    _write_cache(images, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["codes.u8", "crc32.u32", "files.txt", "meta.json"]
    (out / ".notes.tmp").write_text("a temporary name, but not one of a cache's files")
    with pytest.raises(UserError, match=r"holds \.notes\.tmp"):
        _write_cache(images, out, overwrite=True)
    assert (out / ".notes.tmp").exists()


def test_a_shard_of_yours_beside_a_finished_pack_is_never_cleared(images, tmp_path, capsys):
    """A fifth hostile round: `shard-000009.tar` (WebDataset's naming) added to a 2-shard pack was deleted by
    `--overwrite`, which cleared every file with a pack's name; a shard number the pack never writes is yours."""
    out = tmp_path / "pack"
    pack_dataset(images, out, 16, shard_size=2, progress=False)
    (out / "shard-000009.tar").write_bytes(b"my own shard")
    _refused_both_ways(images, out, capsys, "holds shard-000009.tar")


def test_a_cache_whose_meta_json_you_annotated_is_yours(images, tmp_path):
    out = tmp_path / "c.parts"
    _write_cache(images, out)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(
        json.dumps({**meta, "notes": "parts from my best run"})
    )  # still reads fine
    _overwrite_refused(
        images, out, tmp_path, r"meta.json that is not as an export wrote it .*not a part cache"
    )


def test_a_cache_whose_codes_you_corrected_is_yours(images, tmp_path):
    import zlib

    out = tmp_path / "c.parts"
    cache = _write_cache(images, out)
    codes = bytearray((out / "codes.u8").read_bytes())
    codes[:4] = bytes([1, 1, 2, 2])  # image 0's codes, corrected by hand, and its CRC-32 with them
    (out / "codes.u8").write_bytes(bytes(codes))
    crc = np.fromfile(out / "crc32.u32", dtype="<u4")
    crc[0] = zlib.crc32(bytes(codes[:4]))
    crc.tofile(out / "crc32.u32")
    del cache
    PartCache.open(out, lock=False)[0]  # it still reads: the CRC-32 checks out
    _overwrite_refused(
        images, out, tmp_path, r"holds codes.u8, crc32.u32, which is not as the export wrote it"
    )


@pytest.mark.parametrize("left", ["meta.json and more", "an empty folder"])
def test_an_overwrite_killed_while_it_deletes_the_cache_can_be_run_again(images, tmp_path, monkeypatch, left):
    import semmae.data.part_cache as part_cache

    out = tmp_path / "c.parts"
    _write_cache(images, out)
    if left == "an empty folder":
        for p in out.iterdir():
            p.unlink()
    else:
        real, calls = os.unlink, []

        def killed(path, *a, **k):
            calls.append(os.path.basename(path))
            if len(calls) == 2:
                raise KeyboardInterrupt  # the kill, part way through the delete
            return real(path, *a, **k)

        monkeypatch.setattr(part_cache.os, "unlink", killed)
        with pytest.raises(KeyboardInterrupt):
            _write_cache(images, out, overwrite=True)
        monkeypatch.setattr(part_cache.os, "unlink", real)
        assert (out / "meta.json").is_file() and "meta.json" not in calls
    _write_cache(images, out, overwrite=True)
    (tmp_path / "empty").mkdir()  # a folder made empty for the cache: written without --overwrite
    _write_cache(images, tmp_path / "empty")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == sorted(p.name for p in out.iterdir())
