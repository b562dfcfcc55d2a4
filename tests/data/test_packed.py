"""`semmae data pack`: round trip, checksums, resume (tiny generated images)."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from _helpers import folder_snapshot, live_run, one_error_line, user_folder
from PIL import Image

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.images import load_rgb
from semmae.data.packed import PackedImages, open_pack_checked, pack_dataset, stream_pack
from semmae.data.part_cache import PartCache
from semmae.errors import UserError
from semmae.utils.run_lock import LOCK_NAME

SIDE = 16


@pytest.fixture
def folder(tmp_path):
    """7 images of different sizes and modes in two classes (one grayscale, one with alpha)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    shapes = [(20, 30), (16, 16), (9, 25), (40, 12), (18, 18), (24, 20), (17, 33)]
    for i, (h, w) in enumerate(shapes):
        cls = root / ("a" if i < 4 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if i == 2:
            img = img.convert("L")
        if i == 5:
            img = img.convert("RGBA")
        img.save(cls / f"{i}.png")
    return root


@pytest.fixture
def cache(folder, tmp_path):
    files = ImageFolderDataset(folder).relative_paths
    writer = PartCache.create(tmp_path / "parts.cache", files, grid=4, num_parts=3)
    g = torch.Generator().manual_seed(0)
    writer.write(
        0, torch.randint(0, 4, (len(files), 4, 4), generator=g), torch.rand(len(files), 4, 4, generator=g)
    )
    return writer.finalize()


def _expected_pixels(path) -> np.ndarray:
    img = load_rgb(path)  # data check's decoding rules
    return np.asarray(img.resize((SIDE, SIDE), Image.BICUBIC) if img.size != (SIDE, SIDE) else img)


def test_round_trip_pixels_labels_sizes_and_part_cells(folder, cache, tmp_path):
    report = pack_dataset(folder, tmp_path / "pack", SIDE, parts=cache.path, shard_size=3, progress=False)
    assert (report.num_images, report.shards_total, report.shards_written) == (7, 3, 3)
    pack = PackedImages.open(tmp_path / "pack")
    ds = ImageFolderDataset(folder)
    assert len(pack) == 7 and pack.classes == ds.classes and pack.relative_paths == ds.relative_paths
    assert (pack.grid, pack.num_parts, pack.no_part_id) == (4, 3, 3)
    order = [6, 0, 3, 4, 1]
    batch = pack.get_batch(order)
    assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape == (5, SIDE, SIDE, 3)
    for j, i in enumerate(order):
        path, label = ds.samples[i]
        np.testing.assert_array_equal(batch["pixels"][j].numpy(), _expected_pixels(path))
        assert batch["label"][j] == label and batch["index"][j] == i
        w, h = Image.open(path).size
        assert batch["size"][j].tolist() == [h, w]
        np.testing.assert_array_equal(batch["codes"][j].numpy().ravel(), cache._array()[i])
    assert report.bytes_per_image == pytest.approx(pack.bytes_per_image)

    # any WebDataset reader streams the same records, in index order
    shards = sorted(str(p) for p in (tmp_path / "pack").glob("shard-*.tar"))
    streamed = list(stream_pack(shards))
    assert [s["index"] for s in streamed] == list(range(7))
    everything = pack.get_batch(range(7))
    for s in streamed:
        i = s["index"]
        assert torch.equal(s["pixels"], everything["pixels"][i]) and torch.equal(
            s["codes"], everything["codes"][i]
        )
        assert s["label"] == everything["label"][i] and torch.equal(s["size"], everything["size"][i])


def test_pack_without_parts_and_cli(folder, tmp_path, capsys):
    out = tmp_path / "pack"
    assert (
        main(["data", "pack", "--data", str(folder), "--out", str(out), "--side", "16", "--num-workers", "0"])
        == 0
    )
    assert "packed 7 images" in capsys.readouterr().out
    pack = PackedImages.open(out)
    assert pack.grid is None and "codes" not in pack.get_batch([0])
    assert main(["data", "check", "--data", str(out)]) == 0
    assert "every checksum matches" in capsys.readouterr().out
    # a finished pack is not overwritten by accident
    assert main(["data", "pack", "--data", str(folder), "--out", str(out), "--side", "16"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_corrupt_shard_is_named_in_one_line(folder, tmp_path, capsys):
    out = tmp_path / "pack"
    pack_dataset(folder, out, SIDE, shard_size=3, progress=False)
    shard = out / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF  # same size, one flipped byte: only the checksum notices
    shard.write_bytes(bytes(data))
    PackedImages.open(out)  # sizes still match
    assert main(["data", "check", "--data", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard-000001.tar" in err[0] and "checksum" in err[0], err
    with pytest.raises(UserError, match="shard-000001.tar"):
        open_pack_checked(out)
    shard.write_bytes(bytes(data[:-512]))  # truncated: refused on open, before any training
    with pytest.raises(UserError, match=r"shard-000001.tar is \d+ bytes"):
        PackedImages.open(out)


def test_interrupted_pack_resumes_to_the_same_bytes(folder, cache, tmp_path):
    ref = tmp_path / "ref"
    pack_dataset(folder, ref, SIDE, parts=cache.path, shard_size=2, progress=False)
    out = tmp_path / "run"
    first = pack_dataset(folder, out, SIDE, parts=cache.path, shard_size=2, progress=False, max_shards=2)
    assert first.shards_written == 2 and first.shards_total == 4
    (out / "shard-000002.tar.partial").write_bytes(b"half a shard")  # killed while writing shard 2
    with pytest.raises(UserError, match="unfinished"):
        PackedImages.open(out)
    with pytest.raises(UserError, match="side differ"):
        pack_dataset(folder, out, SIDE + 1, parts=cache.path, shard_size=2, progress=False)
    rest = pack_dataset(folder, out, SIDE, parts=cache.path, shard_size=2, progress=False)
    assert rest.shards_written == 2
    assert not list(out.glob("*.partial"))
    a, b = (json.loads((p / "pack.json").read_text()) for p in (ref, out))
    assert a["complete"] and b["complete"]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    open_pack_checked(out)


def test_unreadable_image_stops_the_pack_naming_it(folder, tmp_path):
    (folder / "b" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"bad\.png.*semmae data check"):
        pack_dataset(folder, tmp_path / "pack", SIDE, shard_size=100, progress=False)
    with pytest.raises(UserError, match="unfinished"):
        PackedImages.open(tmp_path / "pack")


def test_decoding_workers_write_the_same_pack(folder, tmp_path):
    pack_dataset(folder, tmp_path / "a", SIDE, shard_size=4, progress=False)
    pack_dataset(folder, tmp_path / "b", SIDE, shard_size=4, progress=False, workers=2)
    a, b = (json.loads((tmp_path / p / "pack.json").read_text()) for p in ("a", "b"))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(side=8), "holds pixels of shape [16, 16, 3], pack.json says [8, 8, 3]"),
        (lambda m: m.update(side=32), "holds pixels of shape [16, 16, 3], pack.json says [32, 32, 3]"),
        (lambda m: m["parts"].update(grid=2), "holds parts of shape [4, 4], pack.json says [2, 2]"),
        (lambda m: m.update(side="16"), "pack.json has a bad side '16'"),
        (lambda m: m["shards"][0].update(count=-1), "pack.json has a bad shard row"),
    ],
    ids=["side-smaller", "side-larger", "part-grid", "side-text", "shard-row"],
)
def test_an_edited_manifest_is_refused_in_one_line(folder, cache, tmp_path, capsys, edit, message):
    """Issue 29: an edited pack.json used to pass `data check` and give internal errors when read."""
    out = tmp_path / "pack"
    pack_dataset(folder, out, SIDE, parts=cache.path, shard_size=3, progress=False)
    meta = json.loads((out / "pack.json").read_text())
    edit(meta)
    (out / "pack.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="repack it"):
        PackedImages.open(out)
    assert main(["data", "check", "--data", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_edited_index_offsets_are_refused_in_one_line(folder, cache, tmp_path):
    out = tmp_path / "pack"
    pack_dataset(folder, out, SIDE, parts=cache.path, shard_size=3, progress=False)
    path = out / "index" / "shard-000001.npy"
    for col, value in ((0, 10**9), (1, -5), (2, 7)):
        index = np.load(path)
        original = index.copy()
        index[1, col] = value
        np.save(path, index)  # same size: only the checksum (data check) would notice
        with pytest.raises(UserError, match="shard-000001.tar: its index has (offsets|labels) outside"):
            PackedImages.open(out)
        np.save(path, original)
    PackedImages.open(out)


def test_a_full_disk_names_the_file_being_written(folder, tmp_path, capsys, monkeypatch):
    """Issue 29: a write to an open shard that fails (ENOSPC) said '(the system did not say which)'."""
    import errno

    from semmae.data.packed import ShardWriter

    def full(self, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardWriter, "write", full)
    out = tmp_path / "pack"
    assert (
        main(["data", "pack", "--data", str(folder), "--out", str(out), "--side", "16", "--num-workers", "0"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out / 'shard-000000.tar.partial'}: No space left on device" in err[0], err


def test_shard_writer_writes_webdatasets_bytes(tmp_path):
    wds = pytest.importorskip("webdataset")
    from semmae.data.packed import ShardWriter

    samples = [
        {
            "__key__": f"{i:09d}",
            "pixels.npy": np.full((4, 4, 3), i, np.uint8),
            "parts.npy": np.arange(4, dtype=np.uint8).reshape(2, 2),
            "cls": i % 2,
            "json": {"path": f"a/{i}.png", "height": 5, "width": 7},
        }
        for i in range(3)
    ]
    with wds.TarWriter(str(tmp_path / "wds.tar"), mtime=0) as sink:
        for s in samples:
            sink.write(dict(s))
    with ShardWriter(tmp_path / "ours.tar") as sink:
        for s in samples:
            sink.write(dict(s))
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "wds.tar").read_bytes()


def test_packing_and_streaming_need_no_webdataset(folder, cache, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "webdataset", None)  # `import webdataset` raises ImportError
    pack_dataset(folder, tmp_path / "pack", SIDE, parts=cache.path, shard_size=3, progress=False)
    pack = PackedImages.open(tmp_path / "pack")
    streamed = list(stream_pack(sorted(str(p) for p in (tmp_path / "pack").glob("shard-*.tar"))))
    everything = pack.get_batch(range(7))
    assert [s["index"] for s in streamed] == list(range(7))
    for s in streamed:
        i = s["index"]
        assert torch.equal(s["pixels"], everything["pixels"][i]) and torch.equal(
            s["codes"], everything["codes"][i]
        )
        assert s["label"] == everything["label"][i] and torch.equal(s["size"], everything["size"][i])


def _pack_cli(folder, out, *extra):
    return main(
        [
            "data",
            "pack",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--side",
            "16",
            "--num-workers",
            "0",
            *extra,
        ]
    )


def test_overwrite_replaces_only_a_pack_and_nothing_inside_a_live_run(folder, tmp_path, capsys):
    user = user_folder(tmp_path / "home")
    stray = tmp_path / "stray"
    pack_dataset(folder, stray, SIDE, progress=False)
    (stray / "notes.txt").write_text("mine")
    just_a_list = tmp_path / "lists"
    just_a_list.mkdir()
    (just_a_list / "files.txt").write_text("my list\n")  # a pack's file name, but no pack
    cases = (
        (user, "holds photos, thesis.txt"),
        (stray, "holds notes.txt"),
        (just_a_list, "has no readable pack.json"),
    )
    for out, why in cases:
        before = folder_snapshot(out)
        for extra in ((), ("--overwrite",)):
            assert _pack_cli(folder, out, *extra) == 2
            err = one_error_line(capsys, str(out), why, "not a pack")
            assert "--overwrite" not in err
            assert folder_snapshot(out) == before
    with live_run(tmp_path / "running", "bootstrap") as running:
        before = folder_snapshot(running)
        assert _pack_cli(folder, running, "--overwrite") == 2
        one_error_line(capsys, "is in use by another run", "`semmae bootstrap`")
        assert folder_snapshot(running) == before
        pack_dataset(folder, tmp_path / "p", SIDE, progress=False)
        shutil.copytree(tmp_path / "p", running / "pack")
        before = folder_snapshot(running)
        for extra in ((), ("--overwrite",)):
            assert _pack_cli(folder, running / "pack", *extra) == 2
            one_error_line(capsys, "the folder of a run that is still going")
        assert folder_snapshot(running) == before


def test_a_second_pack_on_the_same_out_is_refused(folder, tmp_path, capsys):
    from semmae.utils.run_lock import LOCK_NAME, exclusive

    out = tmp_path / "pack"
    with exclusive(out / LOCK_NAME, f"pack {out}", "data pack"):
        assert _pack_cli(folder, out) == 2
        one_error_line(capsys, f"pack {out} is in use by another run", "`semmae data pack`")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    assert _pack_cli(folder, out) == 0
    assert LOCK_NAME not in {p.name for p in out.iterdir()}
    open_pack_checked(out)


def test_out_inside_the_data_is_refused(folder, capsys):
    assert _pack_cli(folder, folder / "packed") == 2
    one_error_line(capsys, "lies inside --data")
    assert not (folder / "packed").exists()


def test_resume_verifies_finished_shards_and_a_deleted_bad_shard_is_rewritten(folder, tmp_path, capsys):
    """A resume checks every finished shard's SHA-256; one that is not as written is named, never replaced (a
    sample you added looks the same as damage); deleted, it is written again."""
    ref = tmp_path / "ref"
    pack_dataset(folder, ref, SIDE, shard_size=2, progress=False)
    out = tmp_path / "pack"
    pack_dataset(folder, out, SIDE, shard_size=2, progress=False, max_shards=2)
    shard = out / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF  # damaged after it was recorded: same size, another checksum
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"shard-000001.tar is not as the pack wrote it .* move it out"):
        pack_dataset(folder, out, SIDE, shard_size=2, progress=False)
    assert shard.read_bytes() == bytes(data)
    shard.unlink()
    report = pack_dataset(folder, out, SIDE, shard_size=2, progress=False)
    assert report.shards_written == 3 and "writing shard shard-000001.tar again" in capsys.readouterr().out
    assert (out / "pack.json").read_text() == (ref / "pack.json").read_text()
    # a finished pack with a damaged shard: the advice (delete it and rerun) works
    shard.write_bytes(bytes(data))
    with pytest.raises(
        UserError, match="delete it and rerun `semmae data pack` with the same arguments"
    ) as e:
        open_pack_checked(out)
    shard.unlink()
    report = pack_dataset(folder, out, SIDE, shard_size=2, progress=False)
    assert report.shards_written == 1
    open_pack_checked(out)
    assert (out / "pack.json").read_text() == (ref / "pack.json").read_text()
    assert "rerun" in str(e.value)


@pytest.mark.parametrize(
    "overwrite, size",
    [(False, 40000), (True, 40000), (True, 20)],
    ids=["rerun", "overwrite", "overwrite-same-size"],
)
def test_a_sample_you_added_to_a_finished_shard_is_never_packed_over(
    folder, tmp_path, capsys, overwrite, size
):
    import tarfile

    out = tmp_path / "pack"
    pack_dataset(folder, out, SIDE, shard_size=2, progress=False)
    shard = out / "shard-000001.tar"
    before = shard.stat().st_size
    with tarfile.open(shard, "a") as tar:  # `tar -rf`: a sample of yours
        info = tarfile.TarInfo("999999.txt")
        info.size = size
        tar.addfile(info, io.BytesIO(b"m" * size))
    mine = shard.read_bytes()
    assert (len(mine) == before) == (size == 20)  # a small one fits the tar's padding: the size stays
    (out / "index" / "shard-000002.npy").unlink()  # a finished pack with a shard to write again
    capsys.readouterr()
    assert _pack_cli(folder, out, "--shard-size", "2", *(["--overwrite"] if overwrite else [])) == 2
    one_error_line(capsys, "shard-000001.tar is not as the pack wrote it")
    assert shard.read_bytes() == mine


def test_a_pack_whose_manifest_you_annotated_is_yours(folder, tmp_path, capsys):
    out = tmp_path / "pack"
    assert _pack_cli(folder, out, "--shard-size", "2") == 0
    manifest = json.loads((out / "pack.json").read_text())
    (out / "pack.json").write_text(json.dumps({**manifest, "notes": "the pack of my thesis"}))
    before = folder_snapshot(tmp_path)
    capsys.readouterr()
    assert _pack_cli(folder, out, "--shard-size", "2", "--overwrite") == 2
    one_error_line(capsys, "pack.json that is not as a pack wrote it")
    assert folder_snapshot(tmp_path) == before


def test_an_overwrite_killed_while_it_clears_the_pack_can_be_run_again(folder, tmp_path, monkeypatch):
    import semmae.data.packed as packed

    out = tmp_path / "pack"
    pack_dataset(folder, out, SIDE, shard_size=2, progress=False)
    real, calls = os.unlink, []
    files = [p for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME]

    def killed(path, *a, **k):
        calls.append(path)
        if len(calls) == len(files):
            raise KeyboardInterrupt  # the kill, at the clear's last file
        return real(path, *a, **k)

    monkeypatch.setattr(packed.os, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        pack_dataset(folder, out, SIDE, shard_size=2, progress=False, overwrite=True)
    monkeypatch.setattr(packed.os, "unlink", real)
    assert (out / "pack.json").is_file()  # the manifest goes last
    pack_dataset(folder, out, SIDE, shard_size=2, progress=False, overwrite=True)
    open_pack_checked(out)
