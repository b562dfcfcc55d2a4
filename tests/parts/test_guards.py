"""Part verbs against a hostile but fair user (issue 18): damaged caches, corrupt images in workers, unwritable
paths and taken run folders are each one line with exit 2."""

from __future__ import annotations

import shutil

import pytest
from _helpers import one_error_line

from semmae.cli import main
from semmae.data.part_cache import PartCache

from .conftest import train_args


def _export(data, ckpt, out, *extra):
    argv = ["parts", "export", "--data", str(data), "--checkpoint", str(ckpt), "--out", str(out)]
    return main([*argv, "--grid", "4", "--batch-size", "4", "--num-workers", "0", *extra])


@pytest.fixture(scope="module")
def val_cache(tmp_path_factory, synth, trained):
    out = tmp_path_factory.mktemp("cache") / "val.parts"
    assert _export(synth / "val", trained, out) == 0
    return out


def test_export_onto_a_cache_needs_overwrite_which_exists(tmp_path, synth, trained, val_cache, capsys):
    cache = tmp_path / "c.parts"
    shutil.copytree(val_cache, cache)
    assert _export(synth / "val", trained, cache) == 2
    one_error_line(capsys, "already exists", "--overwrite")
    assert _export(synth / "val", trained, cache, "--overwrite") == 0
    assert len(PartCache.open(cache)) == len(PartCache.open(val_cache))


def test_export_to_an_unwritable_path_isone_error_line(tmp_path, synth, trained, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _export(synth / "val", trained, blocker / "c.parts") == 2
    one_error_line(capsys, str(blocker), "Not a directory")


def test_corrupt_image_in_export_workers_is_the_sameone_error_line(tmp_path, synth, trained, capsys):
    data = tmp_path / "val"
    shutil.copytree(synth / "val", data)
    victim = sorted(data.rglob("*.png"))[1]
    victim.write_bytes(b"\x89PNG broken")
    lines = []
    for workers in ("0", "2"):
        assert _export(data, trained, tmp_path / f"c{workers}.parts", "--num-workers", workers) == 2
        lines.append(one_error_line(capsys, victim.name))
    assert lines[0] == lines[1]


def _damage(cache, tmp_path):
    damaged = tmp_path / "damaged.parts"
    shutil.copytree(cache, damaged)
    data = bytearray((damaged / "codes.u8").read_bytes())
    data[3] = 0xFF  # part id 7 in a 6-part cache: out of range, and a checksum mismatch
    (damaged / "codes.u8").write_bytes(bytes(data))
    return damaged


def test_damaged_cache_is_one_line_in_eval_and_masks_show(tmp_path, synth, val_cache, capsys):
    damaged = _damage(val_cache, tmp_path)
    argv = ["parts", "eval", "--data", str(synth / "val"), "--cache", str(damaged)]
    assert main([*argv, "--masks", str(synth / "masks" / "val"), "--no-baselines", "--num-workers", "0"]) == 2
    one_error_line(capsys, str(damaged), "damaged", "image 0")
    argv = [
        "masks",
        "show",
        "--data",
        str(synth / "val"),
        "--cache",
        str(damaged),
        "--out",
        str(tmp_path / "m.png"),
    ]
    assert main([*argv, "--img-size", "32", "--patch-size", "8", "--num-images", "1"]) == 2
    one_error_line(capsys, str(damaged), "damaged")


def test_damaged_cache_is_one_line_in_pretrain_with_workers(tmp_path, synth, val_cache, capsys):
    damaged = _damage(val_cache, tmp_path)
    argv = ["pretrain", "--data", str(synth / "val"), "--parts", str(damaged), "--out", str(tmp_path / "run")]
    argv += ["--model", "mae_vit_micro_patch8", "--img-size", "32", "--precision", "fp32", "--no-progress"]
    argv += [
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--num-workers",
        "1",
        "--vis-every",
        "0",
    ]
    assert main(argv) == 2
    one_error_line(capsys, str(damaged), "damaged")


def test_meta_without_grid_isone_error_line(tmp_path, synth, val_cache, capsys):
    import json

    broken = tmp_path / "nogrid.parts"
    shutil.copytree(val_cache, broken)
    meta = json.loads((broken / "meta.json").read_text())
    del meta["grid"]
    (broken / "meta.json").write_text(json.dumps(meta))
    argv = ["parts", "eval", "--data", str(synth / "val"), "--cache", str(broken)]
    assert main([*argv, "--masks", str(synth / "masks" / "val"), "--no-baselines"]) == 2
    one_error_line(capsys, str(broken), "no 'grid'")


def test_parts_train_refuses_bad_numbers_and_a_taken_folder(tmp_path, synth, trained, encoder_ckpt, capsys):
    for flags, needle in ((["--lr", "nan"], "finite"), (["--clip-grad", "-1"], "--clip-grad must be >= 0")):
        assert main(train_args(synth / "train", tmp_path / "new", encoder_ckpt, *flags)) == 2
        one_error_line(capsys, needle)
    run = trained.parent
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(train_args(synth / "train", run, encoder_ckpt, "--resume", "none")) == 2
    one_error_line(capsys, "already holds a run", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_second_export_into_the_same_cache_is_refused(tmp_path, synth, trained, capsys):
    from semmae.utils.run_lock import exclusive

    out = tmp_path / "c.parts"
    with exclusive(f"{out}.lock", f"part cache {out}", "parts export"):
        assert _export(synth / "val", trained, out) == 2
    one_error_line(capsys, f"part cache {out} is in use by another run", "`semmae parts export`")
    assert not out.exists() and not (tmp_path / "c.parts.partial").exists()
    assert _export(synth / "val", trained, out) == 0  # released, and the lock file is gone afterwards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parts"]


def test_export_inside_its_own_data_is_refused(tmp_path, synth, trained, capsys):
    data = tmp_path / "val"
    shutil.copytree(synth / "val", data)
    assert _export(data, trained, data / "c.parts") == 2  # the cache would become a class of the ImageFolder
    one_error_line(capsys, "lies inside --data")
    assert not (data / "c.parts").exists() and not (data / "c.parts.lock").exists()
