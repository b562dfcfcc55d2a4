import json

import numpy as np
import pytest
import torch
from _helpers import folder_snapshot, live_run, user_folder, write_image_folder

from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCache, decode_cells, encode_cells
from semmae.data.pretrain_dataset import PartImageDataset
from semmae.errors import UserError


def _maps(n, grid, num_parts, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_parts + 1, (n, grid, grid)), rng.random((n, grid, grid))


@pytest.mark.parametrize("num_parts", [1, 6, 7, 15])
def test_encode_decode_exact_ids_and_quantised_fg(num_parts):
    ids, fg = _maps(4, 5, num_parts)
    back_ids, back_fg = decode_cells(encode_cells(ids, fg, num_parts), num_parts)
    assert (back_ids == ids).all()
    fg_bits = 8 - int(np.ceil(np.log2(num_parts + 1)))
    assert np.abs(back_fg - fg).max() <= 0.5 / ((1 << fg_bits) - 1) + 1e-6


def test_bad_values_and_too_many_parts_are_refused():
    with pytest.raises(ValueError, match="part ids"):
        encode_cells(np.array([7]), np.array([0.5]), 6)
    with pytest.raises(ValueError, match="foreground"):
        encode_cells(np.array([1]), np.array([1.5]), 6)
    with pytest.raises(UserError, match="1..15 parts"):
        encode_cells(np.array([1]), np.array([0.5]), 16)


def _write_all(path, files, ids, fg, num_parts, chunk=2):
    w = PartCache.create(
        path, files, grid=ids.shape[1], num_parts=num_parts, producer={"checkpoint": "x.pth"}
    )
    for s in range(w.next_index, len(files), chunk):
        w.write(s, ids[s : s + chunk], fg[s : s + chunk])
    return w.finalize()


def test_round_trip_and_size_target(tmp_path):
    files = [f"c/{i}.png" for i in range(5)]
    ids, fg = _maps(5, 28, 6)
    cache = _write_all(tmp_path / "cache", files, ids, fg, 6)
    assert len(cache) == 5 and cache.grid == 28 and cache.no_part_id == 6
    assert cache.bytes_per_image <= 1024  # issue target: <= 1 KB per image at a 28x28 grid
    assert (tmp_path / "cache" / "codes.u8").stat().st_size == 5 * 784
    part, f = cache[3]
    assert part.dtype == torch.uint8 and part.shape == (28, 28)
    assert (part.numpy() == ids[3]).all()
    assert np.abs(f.numpy() - fg[3]).max() < 0.02
    reopened = PartCache.open(tmp_path / "cache", files)
    assert reopened.meta["producer"] == {"checkpoint": "x.pth"}


def test_mismatched_dataset_is_refused_with_first_difference(tmp_path):
    files = [f"c/{i}.png" for i in range(4)]
    ids, fg = _maps(4, 3, 6)
    _write_all(tmp_path / "cache", files, ids, fg, 6)
    other = files[:2] + ["c/x.png", "c/3.png"]
    with pytest.raises(UserError, match=r"different dataset.*index 2.*'c/2.png'.*'c/x.png'"):
        PartCache.open(tmp_path / "cache", other)
    with pytest.raises(UserError, match="4 images, the dataset 3"):
        PartCache.open(tmp_path / "cache", files[:3])


def test_interrupted_write_resumes_to_the_same_bytes(tmp_path):
    files = [f"c/{i}.png" for i in range(7)]
    ids, fg = _maps(7, 4, 6, seed=1)
    _write_all(tmp_path / "straight", files, ids, fg, 6)

    w = PartCache.create(tmp_path / "resumed", files, grid=4, num_parts=6, producer={"checkpoint": "x.pth"})
    w.write(0, ids[:3], fg[:3])
    del w  # "killed" here: a reader must not see the half-written cache
    with pytest.raises(UserError, match="unfinished"):
        PartCache.open(tmp_path / "resumed")
    with pytest.raises(UserError, match="other settings.*grid"):
        PartCache.create(tmp_path / "resumed", files, grid=5, num_parts=6, producer={"checkpoint": "x.pth"})
    w = PartCache.create(tmp_path / "resumed", files, grid=4, num_parts=6, producer={"checkpoint": "x.pth"})
    assert w.next_index == 3
    with pytest.raises(ValueError, match="continue at index 3"):
        w.write(0, ids[:1], fg[:1])
    for s in range(3, 7, 2):
        w.write(s, ids[s : s + 2], fg[s : s + 2])
    w.finalize()
    a = (tmp_path / "straight" / "codes.u8").read_bytes()
    b = (tmp_path / "resumed" / "codes.u8").read_bytes()
    assert a == b
    assert not (tmp_path / "resumed.partial").exists()


def test_existing_cache_needs_overwrite_and_incomplete_cannot_finalize(tmp_path):
    files = ["a.png", "b.png"]
    ids, fg = _maps(2, 2, 3)
    _write_all(tmp_path / "c", files, ids, fg, 3)
    with pytest.raises(UserError, match="already exists"):
        PartCache.create(tmp_path / "c", files, grid=2, num_parts=3)
    w = PartCache.create(tmp_path / "d", files, grid=2, num_parts=3)
    w.write(0, ids[:1], fg[:1])
    with pytest.raises(UserError, match="incomplete: 1/2"):
        w.finalize()


def test_open_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        PartCache.open(tmp_path / "none")
    (tmp_path / "notcache").mkdir()
    with pytest.raises(UserError, match="not a part cache"):
        PartCache.open(tmp_path / "notcache")
    files = ["a.png", "b.png"]
    ids, fg = _maps(2, 2, 3)
    _write_all(tmp_path / "c", files, ids, fg, 3)
    with open(tmp_path / "c" / "codes.u8", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(UserError, match="corrupt"):
        PartCache.open(tmp_path / "c")


def test_pretrain_dataset_reads_parts_on_the_model_grid(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=("a", "b"), per_class=2, size=24)
    files = ImageFolderDataset(root).relative_paths
    ids = np.stack([np.full((4, 4), i % 4) for i in range(4)])
    cache = _write_all(tmp_path / "cache", files, ids, np.ones((4, 4, 4)), 3)
    ds = PartImageDataset(root, cache.path, img_size=32, patch_size=8)
    item = ds[2]
    assert item["image"].shape == (3, 32, 32)
    assert item["part_ids"].shape == (16,) and (item["part_ids"] == 2).all()
    assert torch.allclose(item["fg"], torch.ones(16))
    plain = PartImageDataset(root, None, img_size=32, patch_size=8)[0]
    assert "part_ids" not in plain and plain["image"].shape == (3, 32, 32)
    write_image_folder(tmp_path / "d", classes=("c",), per_class=1, size=24)
    with pytest.raises(UserError, match="different dataset"):
        PartImageDataset(root, cache.path, img_size=32, patch_size=8)


def test_pretrain_dataset_refuses_a_cache_on_another_grid(tmp_path):
    """A 2x2 cache under a 4x4 patch grid (32 px / patch 8) would give blocky maps: refused, naming both grids."""
    root = write_image_folder(tmp_path / "d", classes=("a",), per_class=2, size=24)
    files = ImageFolderDataset(root).relative_paths
    ids, fg = _maps(2, 2, 3)
    cache = _write_all(tmp_path / "cache", files, ids, fg, 3)
    with pytest.raises(UserError) as err:
        PartImageDataset(root, cache.path, img_size=32, patch_size=8)
    msg = str(err.value)
    assert "\n" not in msg
    assert "2x2 grid" in msg and "patch grid is 4x4" in msg and "semmae parts export --grid 4" in msg
    assert (
        PartImageDataset(root, cache.path, img_size=16, patch_size=8).cache.grid == 2
    )  # 16 / 8 = 2: accepted


def test_pretrain_dataset_flip_only_with_and_without_a_cache(tmp_path):
    """scale=None (``--augment flip``): each item is the whole image (both halves, no crop) or its mirror, and
    with a cache the part ids are the cache's, mirrored together with the image."""
    from PIL import Image

    from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    arr = np.zeros((48, 64, 3), dtype=np.uint8)
    arr[:, :32, 0] = 220  # left half red, right half blue
    arr[:, 32:, 2] = 220
    for i in range(2):
        Image.fromarray(arr).save(root / "a" / f"img{i}.png")
    files = ImageFolderDataset(root).relative_paths
    ids = np.stack([np.tile(np.arange(1, 5), (4, 1))] * 2)  # id = column + 1
    cache = _write_all(tmp_path / "cache", files, ids, np.ones((2, 4, 4)), 4)

    def side(image):
        """'id' when red is on the left (as stored), 'mirror' when on the right; asserts both halves are whole."""
        red = image[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        left, right = red[:, :13].mean(), red[:, 19:].mean()
        assert {round(float(left), 1), round(float(right), 1)} == {0.0, 0.9}, (left, right)
        return "id" if left > right else "mirror"

    torch.manual_seed(0)
    with_parts = PartImageDataset(root, cache.path, img_size=32, patch_size=8, scale=None)
    without = PartImageDataset(root, None, img_size=32, patch_size=8, scale=None)
    seen = set()
    for trial in range(12):
        item = with_parts[trial % 2]
        how = side(item["image"])
        grid = torch.as_tensor(ids[0]).long()
        assert torch.equal(item["part_ids"].view(4, 4), grid if how == "id" else grid.flip(-1))
        plain = without[trial % 2]
        assert "part_ids" not in plain and plain["image"].shape == (3, 32, 32)
        seen |= {("parts", how), ("plain", side(plain["image"]))}
    assert seen == {(k, h) for k in ("parts", "plain") for h in ("id", "mirror")}


# -- issue 18: a damaged, incomplete or foreign cache is one line naming the cache ---------------------------------
def _cache_for(tmp_path, num_parts=3):
    root = write_image_folder(tmp_path / "d", classes=("a",), per_class=3, size=24)
    files = ImageFolderDataset(root).relative_paths
    ids, fg = _maps(3, 4, num_parts)
    w = PartCache.create(tmp_path / "cache", files, grid=4, num_parts=num_parts, root=root)
    w.write(0, ids, fg)
    return root, files, w.finalize(), ids


def test_damaged_codes_fail_their_checksum_when_read(tmp_path):
    root, files, cache, ids = _cache_for(tmp_path)
    data = bytearray((cache.path / "codes.u8").read_bytes())
    data[16 + 5] ^= 0x01  # image 1: a flipped foreground bit - still a valid code, only the checksum sees it
    (cache.path / "codes.u8").write_bytes(bytes(data))
    reopened = PartCache.open(cache.path, files, root=root)
    assert (reopened[0][0].numpy() == ids[0]).all()
    with pytest.raises(
        UserError, match=r"cache.*is damaged: the part maps of image 1 fail their checksum.*--overwrite"
    ):
        reopened[1]


def test_format_1_cache_is_read_with_a_note_and_range_checked(tmp_path, capsys):
    _, files, cache, _ = _cache_for(tmp_path, num_parts=6)
    meta = json.loads((cache.path / "meta.json").read_text())
    meta["format_version"] = 1
    for key in ("checksum", "content_fingerprint"):
        meta.pop(key)
    (cache.path / "meta.json").write_text(json.dumps(meta))
    (cache.path / "crc32.u32").unlink()
    (cache.path / "sizes.u64").unlink()
    data = bytearray((cache.path / "codes.u8").read_bytes())
    data[16] = 0xFF  # image 1: part id 7 in a 6-part cache (3 part bits)
    (cache.path / "codes.u8").write_bytes(bytes(data))
    old = PartCache.open(cache.path, files)
    assert "format 1 (no checksums)" in capsys.readouterr().err
    old[0]
    with pytest.raises(UserError, match=r"image 1 holds part id 7, the cache has 6 parts"):
        old[1]


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda m: m.pop("grid"), r"meta.json is incomplete \(no 'grid'\)"),
        (lambda m: m.update(grid="4"), r"bad 'grid'"),
        (lambda m: m.update(num_images=-1), r"bad 'num_images'"),
        (lambda m: m.update(format_version=9), r"format version 9"),
    ],
)
def test_damaged_meta_is_one_line_naming_the_cache(tmp_path, change, needle):
    _, files, cache, _ = _cache_for(tmp_path)
    meta = json.loads((cache.path / "meta.json").read_text())
    change(meta)
    (cache.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=needle) as e:
        PartCache.open(cache.path, files)
    assert str(cache.path) in str(e.value) and "\n" not in str(e.value)
    (cache.path / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="meta.json is corrupt"):
        PartCache.open(cache.path, files)


def test_missing_checksums_file_is_refused(tmp_path):
    _, files, cache, _ = _cache_for(tmp_path)
    (cache.path / "crc32.u32").unlink()
    with pytest.raises(UserError, match="crc32.u32 is missing"):
        PartCache.open(cache.path, files)


def test_cache_for_other_images_with_the_same_names_is_refused(tmp_path):
    root, files, cache, _ = _cache_for(tmp_path)
    from PIL import Image

    Image.new("RGB", (50, 40), (9, 9, 9)).save(root / files[2])  # same name, another image
    with pytest.raises(
        UserError, match=rf"other images with the same file names; first difference: {files[2]}"
    ):
        PartCache.open(cache.path, files, root=root)
    with pytest.raises(UserError, match="other images"):
        PartImageDataset(root, cache.path, img_size=32, patch_size=8)


def test_overwrite_replaces_only_a_part_cache(tmp_path):
    files = ["a/0.png", "a/1.png"]
    ids, fg = _maps(2, 4, 3)
    user = user_folder(tmp_path / "home")
    other_meta = tmp_path / "run"
    other_meta.mkdir()
    (other_meta / "meta.json").write_text('{"epochs": 3}')
    stray = tmp_path / "c.parts"
    _write_all(stray, files, ids, fg, 3)
    (stray / "notes.txt").write_text("mine")
    for folder, why in (
        (user, "holds photos, thesis.txt"),
        (other_meta, "part cache's format"),
        (stray, "notes.txt"),
    ):
        before = folder_snapshot(folder)
        for overwrite in (False, True):
            with pytest.raises(UserError, match=rf"{folder} .*{why}.* not a part cache") as e:
                PartCache.create(folder, files, grid=4, num_parts=3, overwrite=overwrite)
            assert "--overwrite" not in str(e.value)  # a non-cache is never offered to --overwrite
            assert folder_snapshot(folder) == before
    # an unfinished export's folder that holds a user's file is not wiped either
    partial = user_folder(tmp_path / "d.parts.partial")
    before = folder_snapshot(partial)
    with pytest.raises(UserError, match=r"d.parts.partial holds .*thesis.txt"):
        PartCache.create(tmp_path / "d.parts", files, grid=4, num_parts=3)
    assert folder_snapshot(partial) == before


def test_overwrite_of_a_cache_inside_a_live_run_is_refused(tmp_path):
    files = ["a/0.png", "a/1.png"]
    ids, fg = _maps(2, 4, 3)
    _write_all(tmp_path / "running" / "c.parts", files, ids, fg, 3)
    with live_run(tmp_path / "running") as running:
        before = folder_snapshot(running)
        with pytest.raises(UserError, match="the folder of a run that is still going"):
            PartCache.create(running / "new.parts", files, grid=4, num_parts=3)
        with pytest.raises(
            UserError, match=r"lies inside .*running, the folder of a run that is still going"
        ):
            PartCache.create(running / "c.parts", files, grid=4, num_parts=3, overwrite=True)
        assert folder_snapshot(running) == before
    PartCache.create(running / "c.parts", files, grid=4, num_parts=3, overwrite=True)  # the run has ended
