"""``semmae data subset`` / ``data synth`` as writers: a marker is never trusted as a path, one writer per folder,
never inside a live run; names that are not UTF-8; GIF files named, not dropped silently."""

from __future__ import annotations

import json
import os

import pytest
from _helpers import folder_snapshot, live_run, one_error_line, user_folder, write_image_folder

from semmae.cli import main
from semmae.data.subset import MARKER, make_subset
from semmae.utils.run_lock import LOCK_NAME, exclusive


def fake_folder(root, sizes):
    for c, n in sizes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            (root / c / f"img{i}.png").write_bytes(b"x" * (i + 1))
    return root


def subset_argv(src, out, per_class=2, *more):
    return ["data", "subset", "--data", str(src), "--out", str(out), "--per-class", str(per_class), *more]


def planted(out, files, **extra):
    """A subset marker in ``out`` (other settings than any rerun's) listing ``files``."""
    record = {"source": "/nowhere", "per_class": 99, "seed": 7, "mode": "copy", "allow_fewer": False}
    (out / MARKER).write_text(json.dumps({**record, "files": files, "complete": True, **extra}))


@pytest.mark.parametrize(
    "case",
    [
        "absolute_class",
        "dotdot_class",
        "dot_class",
        "absolute_file",
        "dotdot_file",
        "slash_file",
        "not_a_str",
    ],
)
def test_a_planted_marker_naming_paths_outside_out_deletes_nothing(tmp_path, capsys, case):
    src = fake_folder(tmp_path / "src", {"a": 3, "b": 3})
    elsewhere = user_folder(tmp_path / "elsewhere")
    shared = fake_folder(
        tmp_path / "shared", {"a": 2, "b": 2}
    )  # a dataset folder someone planted a marker in
    (tmp_path / "beside.png").write_bytes(b"outside --out")
    files = {
        "absolute_class": {str(elsewhere): ["thesis.txt", "files.txt"], "a": ["img0.png"]},
        "dotdot_class": {"..": ["beside.png"], "a": ["img0.png"]},
        "dot_class": {".": [MARKER], "a": ["img0.png"]},
        "absolute_file": {"a": ["img0.png", str(elsewhere / "thesis.txt")]},
        "dotdot_file": {"a": ["img0.png", "..", "../../beside.png"]},
        "slash_file": {"b": ["img1.png"], "a": ["img0.png", "x/../../../beside.png"]},
        "not_a_str": {"a": ["img0.png", 3]},
    }[case]
    planted(shared, files)
    before = folder_snapshot(tmp_path)
    code = main(subset_argv(src, shared))
    assert (
        folder_snapshot(tmp_path) == before
    )  # every file outside and inside --out byte-identical, untouched
    assert code == 2
    one_error_line(capsys, MARKER, "deletes and writes nothing")


@pytest.mark.parametrize("copy", [False, True])
def test_a_users_own_file_in_a_subset_is_never_replaced(tmp_path, capsys, copy):
    """A subset rerun with other settings writes only where no file is, or where its marker lists one that it
    made: a user's image put in a class folder (a name the new selection picks), or a link of a symlink subset
    that the user replaced by a file of their own, is refused in one line and kept."""
    src = fake_folder(tmp_path / "src", {"a": 4, "b": 4})
    out = tmp_path / "sub"
    more = ["--copy"] if copy else []
    assert main(subset_argv(src, out, 1, *more)) == 0
    kept = {p.name for p in (out / "a").iterdir()}
    new = next(n for n in sorted(os.listdir(src / "a")) if n not in kept)
    (out / "a" / new).write_bytes(b"my own image")  # not listed by the marker
    if not copy:  # the subset's link replaced by the user's own file
        link = out / "a" / next(iter(kept))
        link.unlink()
        link.write_bytes(b"my edit")
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main(subset_argv(src, out, 4, *more)) == 2
    one_error_line(capsys, "which data subset did not write")
    assert folder_snapshot(out) == before
    assert (out / "a" / new).read_bytes() == b"my own image"


def test_a_class_folder_that_links_out_of_out_is_refused(tmp_path, capsys):
    src = fake_folder(tmp_path / "src", {"a": 3, "b": 3})
    elsewhere = fake_folder(tmp_path / "elsewhere", {"a": 2})
    out = tmp_path / "sub"
    make_subset(src, out, 2, seed=1, copy=True)
    a_files = json.loads((out / MARKER).read_text())["files"]["a"]
    for name in a_files:
        (out / "a" / name).unlink()
    (out / "a").rmdir()
    (out / "a").symlink_to(elsewhere / "a")  # the marker's class "a" now resolves elsewhere
    (elsewhere / "a" / a_files[0]).write_bytes(b"someone else's")
    before = folder_snapshot(tmp_path)
    assert main(subset_argv(src, out, 3)) == 2  # other settings: would delete the marker's files of "a"
    one_error_line(capsys, "class 'a'", "a link to", "deletes and writes nothing")
    assert folder_snapshot(tmp_path) == before
    assert (
        main(subset_argv(src, out, 2, "--seed", "1", "--copy")) == 2
    )  # same settings: would write through it
    one_error_line(capsys, "a link to")
    assert folder_snapshot(tmp_path) == before


def test_a_damaged_or_linked_marker_is_refused(tmp_path, capsys):
    src = fake_folder(tmp_path / "src", {"a": 3})
    out = fake_folder(tmp_path / "out", {"a": 2})
    (out / MARKER).write_text(json.dumps(["not", "a", "record"]))
    before = folder_snapshot(tmp_path)
    assert main(subset_argv(src, out)) == 2
    one_error_line(capsys, "is damaged")
    (out / MARKER).unlink()
    (tmp_path / "elsewhere.json").write_text(json.dumps({"files": {"a": ["img0.png", "img1.png"]}}))
    (out / MARKER).symlink_to(tmp_path / "elsewhere.json")
    before = folder_snapshot(tmp_path)
    assert main(subset_argv(src, out)) == 2
    one_error_line(capsys, "not a plain file")
    assert folder_snapshot(tmp_path) == before


def test_a_second_writer_on_one_out_is_refused(tmp_path, capsys):
    src = fake_folder(tmp_path / "src", {"a": 4, "b": 4})
    out = tmp_path / "sub"
    make_subset(src, out, 2)
    before = folder_snapshot(out)
    with exclusive(out / LOCK_NAME, f"subset {out}", "data subset"):
        held = folder_snapshot(out)
        assert main(subset_argv(src, out, 3)) == 2
        one_error_line(capsys, "in use by another run", "`semmae data subset`")
        assert folder_snapshot(out) == held  # the marker still says what it said
        fresh = tmp_path / "fresh"
        with exclusive(fresh / LOCK_NAME, f"subset {fresh}", "data subset"):
            assert main(subset_argv(src, fresh)) == 2
            one_error_line(capsys, "in use by another run")
            assert sorted(p.name for p in fresh.iterdir()) == [LOCK_NAME]
    assert folder_snapshot(out) == before and not (out / LOCK_NAME).exists()
    assert main(subset_argv(src, out, 3)) == 0  # the lock is gone with its holder
    assert not (out / LOCK_NAME).exists()


def test_subset_and_synth_refuse_to_write_inside_a_live_run(tmp_path, capsys):
    src = fake_folder(tmp_path / "src", {"a": 3})
    run = tmp_path / "run"
    run.mkdir()
    with live_run(run):
        before = folder_snapshot(run)
        assert main(subset_argv(src, run / "subset")) == 2
        one_error_line(capsys, f"lies inside {run}", "still going")
        assert main(["data", "synth", "--out", str(run / "synth"), "--num-images", "10", "--size", "16"]) == 2
        one_error_line(capsys, f"lies inside {run}", "still going")
        for verb in (subset_argv(src, run), ["data", "synth", "--out", str(run), "--num-images", "10"]):
            assert main(verb) == 2  # the run's own folder: its lock refuses, naming the holder
            one_error_line(capsys, "in use by another run", "`semmae pretrain`")
        assert folder_snapshot(run) == before


def test_synth_leaves_another_verbs_run_folder_alone(tmp_path, capsys):
    run = tmp_path / "run"
    with live_run(run):
        pass  # the run ended: its lock file stays, recording the verb
    before = folder_snapshot(run)
    assert main(["data", "synth", "--out", str(run), "--num-images", "10", "--size", "16"]) == 2
    one_error_line(capsys, "lock file of `semmae pretrain`")
    assert folder_snapshot(run) == before


def test_synth_holds_its_out_while_writing(tmp_path, capsys):
    out = tmp_path / "s"
    with exclusive(out / LOCK_NAME, f"synthetic dataset {out}", "data synth"):
        assert main(["data", "synth", "--out", str(out), "--num-images", "10", "--size", "16"]) == 2
        one_error_line(capsys, "in use by another run", "`semmae data synth`")
        assert not (out / "synth.json").exists() and not (out / "train").exists()
    assert main(["data", "synth", "--out", str(out), "--num-images", "10", "--size", "16"]) == 0
    assert (out / "synth.json").is_file() and not (out / LOCK_NAME).exists()


def test_out_holding_data_is_refused(tmp_path, capsys):
    src = fake_folder(tmp_path / "shared" / "src", {"a": 3})
    before = folder_snapshot(tmp_path)
    assert main(subset_argv(src, tmp_path / "shared")) == 2
    one_error_line(capsys, "holds --data")
    assert folder_snapshot(tmp_path) == before


def test_names_that_are_not_utf8_are_kept_with_their_bytes(tmp_path, capsys):
    src = fake_folder(tmp_path / "src", {"a": 2})
    raw = os.fsencode(src)
    (src / "a" / os.fsdecode(b"\xff.png")).write_bytes(b"latin-1 name")
    os.mkdir(raw + b"/\xfe")
    with open(raw + b"/\xfe/x\xe9.png", "wb") as fh:
        fh.write(b"in a class that is not utf-8")
    out = tmp_path / "sub"
    argv = subset_argv(src, out, 9, "--allow-fewer")
    assert main(argv) == 0
    assert "wrote 4 files: 4 images of 2 classes" in capsys.readouterr().out
    assert sorted(os.listdir(os.fsencode(out / "a"))) == [b"img0.png", b"img1.png", b"\xff.png"]
    linked = os.fsencode(out) + b"/\xfe/x\xe9.png"
    assert os.path.islink(linked) and open(linked, "rb").read() == b"in a class that is not utf-8"
    assert main(argv) == 0 and "already there" in capsys.readouterr().out  # the marker round-trips the names
    assert main([*argv, "--copy"]) == 0  # other settings: the marker's names are deleted and written anew
    assert "wrote 4 files" in capsys.readouterr().out
    assert not os.path.islink(linked) and open(linked, "rb").read() == b"in a class that is not utf-8"


def test_gif_files_are_skipped_with_a_note(tmp_path, capsys):
    from semmae.data.folder import scan_image_folder

    src = fake_folder(tmp_path / "src", {"a": 2, "b": 2})
    (src / "a" / "anim.gif").write_bytes(b"GIF89a")
    (src / "b" / "still.GIF").write_bytes(b"GIF89a")
    assert main(subset_argv(src, tmp_path / "sub", 2, "--copy")) == 0
    captured = capsys.readouterr()
    assert "(2 per class, copies)" in captured.out  # not "copys"
    assert captured.err.strip() == captured.err.strip().splitlines()[0]
    assert "skipped 2 .gif files" in captured.err and str(src) in captured.err
    assert not list((tmp_path / "sub").rglob("*.gif"))
    classes, samples = scan_image_folder(src)
    assert len(samples) == 4 and not any(p.lower().endswith(".gif") for p, _ in samples)
    scan_image_folder(src)  # noted once per folder
    err = capsys.readouterr().err
    assert err.count("skipped 2 .gif files") == 1 and len(err.strip().splitlines()) == 1
    (tmp_path / "gifs" / "c").mkdir(parents=True)
    (tmp_path / "gifs" / "c" / "only.gif").write_bytes(b"GIF89a")
    assert main(["data", "check", "--data", str(tmp_path / "gifs")]) == 2
    one_error_line(capsys, "holds no images", "its 1 .gif file(s) are skipped")


def test_synth_never_writes_into_a_users_folder(tmp_path, capsys):
    """Issue 37: `data synth` wrote its class folders into any folder without a synth.json, replacing same-named
    files; a dataset root with train/ and val/ got synthetic classes added."""
    from semmae.cli import main

    user = user_folder(tmp_path / "home")
    imagenette = tmp_path / "imagenette"
    (imagenette / "train" / "n01440764").mkdir(parents=True)
    (imagenette / "train" / "n01440764" / "fish.JPEG").write_bytes(b"jpeg")
    (imagenette / "val").mkdir()
    for out in (user, imagenette):
        before = folder_snapshot(out)
        assert main(["data", "synth", "--out", str(out), "--num-images", "12", "--size", "16"]) == 2
        assert "which data synth did not write" in capsys.readouterr().err
        assert folder_snapshot(out) == before
    fresh = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(fresh), "--num-images", "12", "--size", "16"]) == 0
    (fresh / "synth.json").unlink()  # as if interrupted before its record: its images are not told from yours
    before = folder_snapshot(fresh)
    assert main(["data", "synth", "--out", str(fresh), "--num-images", "12", "--size", "16"]) == 2
    assert "an interrupted synth is not continued" in capsys.readouterr().err
    assert folder_snapshot(fresh) == before


def test_synth_never_writes_through_a_link_or_beside_a_users_file(tmp_path, capsys):
    """`data synth` checked only the top of --out's layout: a split folder that is a link to a user's dataset was
    written through (its same-named images replaced), and a class folder holding a user's files got images added."""
    theirs = tmp_path / "mydata"
    (theirs / "bird").mkdir(parents=True)
    (theirs / "bird" / "bird_00001.png").write_bytes(b"my bird photo")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "train").symlink_to(theirs)
    mixed = tmp_path / "mixed"
    (mixed / "train" / "bird").mkdir(parents=True)
    (mixed / "train" / "bird" / "notes.txt").write_text("mine")
    for out in (linked, mixed):
        before = folder_snapshot(tmp_path)
        assert main(["data", "synth", "--out", str(out), "--num-images", "12", "--size", "16"]) == 2
        one_error_line(capsys, "which data synth did not write")
        assert folder_snapshot(tmp_path) == before


def test_a_file_name_that_is_not_utf8_goes_through_parts_export(tmp_path, capsys):
    """Issue 37: non-UTF-8 file names crashed `parts export` (the file-list digest and files.txt)."""
    import os

    import torch
    from timm.models.vision_transformer import VisionTransformer

    from semmae.cli import main
    from semmae.data.part_cache import PartCache

    data = write_image_folder(tmp_path / "imgs", per_class=2, size=32)
    os.rename(data / "a" / "img0.png", os.fsencode(data / "a") + b"/caf\xe9.png")
    vit = VisionTransformer(num_classes=0, img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    ckpt = tmp_path / "enc.pth"
    torch.save({"model": vit.state_dict(), "model_config": {"img_size": 32, "patch_size": 8, "embed_dim": 32,
                "depth": 1, "num_heads": 2}, "epoch": 0}, ckpt)  # fmt: skip
    out = tmp_path / "c.parts"
    argv = [
        "parts",
        "export",
        "--data",
        str(data),
        "--source",
        "attention",
        "--encoder-checkpoint",
        str(ckpt),
    ]
    assert main([*argv, "--device", "cpu", "--num-workers", "0", "--out", str(out)]) == 0
    names = (out / "files.txt").read_bytes().splitlines()
    assert b"a/caf\xe9.png" in names
    from semmae.data.folder import ImageFolderDataset

    cache = PartCache.open(out, ImageFolderDataset(data).relative_paths, root=data)
    assert cache.meta["num_images"] == 4


def test_a_copy_subset_never_deletes_a_users_file_named_like_its_temporary(tmp_path, capsys):
    """``--copy`` writes each image through a fresh temporary of its own: a user's ``img1.png.part`` beside
    an image a rerun selects stays."""
    src = fake_folder(tmp_path / "src", {"a": 4, "b": 4})
    out = tmp_path / "sub"
    assert main(subset_argv(src, out, 1, "--copy")) == 0
    for i in range(4):
        (out / "a" / f"img{i}.png.part").write_text("my partial download\n")
    assert main(subset_argv(src, out, 3, "--copy")) == 0
    assert all((out / "a" / f"img{i}.png.part").read_text() == "my partial download\n" for i in range(4))


@pytest.mark.parametrize("rerun", ["other-seed", "unfinished-same-settings"])
def test_a_copy_you_retouched_in_a_copy_subset_stays_yours(tmp_path, capsys, rerun):
    src = fake_folder(tmp_path / "src", {"a": 4, "b": 4})
    out = tmp_path / "sub"
    assert main(subset_argv(src, out, 2, "--copy")) == 0
    mine = sorted((out / "a").iterdir())[0]
    mine.write_bytes(b"retouched, and longer than any source image")
    if rerun == "unfinished-same-settings":  # a kill before the marker said complete
        record = json.loads((out / MARKER).read_text())
        (out / MARKER).write_text(json.dumps({**record, "complete": False}))
        argv = subset_argv(src, out, 2, "--copy")
    else:
        argv = subset_argv(src, out, 3, "--copy", "--seed", "1")  # the retouched name is selected again
    capsys.readouterr()
    assert main(argv) == 2
    one_error_line(capsys, mine.name, "did not write (or it, or its source, changed since)")
    assert mine.read_bytes() == b"retouched, and longer than any source image"


def test_a_copy_subset_deletes_only_unchanged_copies_when_it_selects_anew(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 6})
    out = tmp_path / "sub"
    assert main(subset_argv(src, out, 2, "--copy")) == 0
    first = sorted(p.name for p in (out / "a").iterdir())
    mine = out / "a" / first[0]
    mine.write_bytes(b"retouched")
    seed = next(s for s in range(1, 50) if not set(first) & set(_selected(src, 2, s)))  # a disjoint selection
    assert main(subset_argv(src, out, 2, "--copy", "--seed", str(seed))) == 0
    assert mine.read_bytes() == b"retouched" and not (out / "a" / first[1]).exists()


def _selected(src, per_class, seed):
    from semmae.data.subset import select_subset

    return select_subset(src, per_class, seed, False)["a"]
