"""``semmae data subset``: exact counts, a selection fixed by names and seed, links that resolve, one-line errors."""

from __future__ import annotations

import json
import random

import pytest

from semmae.cli import main
from semmae.data.subset import MARKER, make_subset, select_subset
from semmae.errors import UserError


def fake_folder(root, sizes: dict[str, int]):
    """Class folders of empty ``.png`` files (the subset never decodes them) plus a non-image file."""
    for c, n in sizes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            (root / c / f"img{i:03d}.png").write_bytes(b"x" * (i + 1))
        (root / c / "notes.txt").write_text("not an image")
    return root


def listing(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.png"))


def test_exact_counts_links_resolve_and_marker(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 7, "b": 5, "c": 9})
    report = make_subset(src, tmp_path / "sub", 4, seed=3)
    assert report.counts == {"a": 4, "b": 4, "c": 4} and report.written == 12
    files = listing(tmp_path / "sub")
    assert len(files) == 12 and {f.split("/")[0] for f in files} == {"a", "b", "c"}
    for f in files:
        p = tmp_path / "sub" / f
        assert (
            p.is_symlink() and p.resolve() == (src / f).resolve() and p.read_bytes() == (src / f).read_bytes()
        )
    marker = json.loads((tmp_path / "sub" / MARKER).read_text())
    assert marker["complete"] and marker["per_class"] == 4 and marker["seed"] == 3


def test_selection_is_the_seeded_shuffle_of_sorted_names(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 10, "b": 10})
    names = sorted(f"img{i:03d}.png" for i in range(10))
    expected = names.copy()
    random.Random("5-a").shuffle(expected)  # the documented rule, spelled out: same files on every machine
    assert select_subset(src, 3, seed=5)["a"] == expected[:3]
    assert select_subset(src, 3, seed=5) == select_subset(src, 3, seed=5)
    assert select_subset(src, 3, seed=5) != select_subset(src, 3, seed=6)
    one = make_subset(src, tmp_path / "one", 3, seed=5)
    two = make_subset(src, tmp_path / "two", 3, seed=5)
    assert listing(one.out) == listing(two.out)


def test_copy_rerun_and_replace(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 6, "b": 6})
    out = tmp_path / "sub"
    first = make_subset(src, out, 2, copy=True)
    assert first.written == 4 and not any(p.is_symlink() for p in out.rglob("*.png"))
    assert make_subset(src, out, 2, copy=True).written == 0  # finished: left alone
    # other settings replace only the marker's files; a file of the user's is kept
    (out / "a" / "mine.txt").write_text("keep")
    third = make_subset(src, out, 5, seed=1)
    assert third.counts == {"a": 5, "b": 5} and len(listing(out)) == 10
    assert (out / "a" / "mine.txt").read_text() == "keep"
    assert all(p.is_symlink() for p in out.rglob("*.png"))


def test_a_source_that_changed_selects_anew(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 6, "b": 6})
    out = tmp_path / "sub"
    make_subset(src, out, 3)
    victim = json.loads((out / MARKER).read_text())["files"]["a"][0]
    (src / "a" / victim).unlink()
    report = make_subset(src, out, 3)  # same settings, but the file list changed
    assert report.written > 0 and len(listing(out)) == 6 and not (out / "a" / victim).is_symlink()
    assert all(p.exists() for p in out.rglob("*.png"))  # no dangling link left


def test_interrupted_subset_is_finished_by_a_rerun(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 6, "b": 6})
    out = tmp_path / "sub"
    make_subset(src, out, 3)
    record = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**record, "complete": False}))
    victim = out / "b" / record["files"]["b"][0]
    victim.unlink()
    assert make_subset(src, out, 3).written == 1 and victim.is_symlink()


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "short",
            r"--per-class 6 is more than 1 class\(es\) hold: b \(5\); use --per-class 5 or --allow-fewer",
        ),
        ("inside", "is inside --data"),
        ("not_empty", "is not empty and not a subset"),
        ("no_classes", "has no class folders"),
        ("empty_class", r"class folder .*c holds no images"),
        ("split_root", "looks like a dataset root with splits"),
    ],
)
def test_refusals(tmp_path, case, message):
    src = fake_folder(tmp_path / "src", {"a": 7, "b": 5})
    out, n = tmp_path / "sub", 6 if case == "short" else 2
    if case == "inside":
        out = src / "a" / "sub"
    if case == "not_empty":
        out.mkdir()
        (out / "x.txt").write_text("")
    if case == "no_classes":
        src = tmp_path / "flat"
        src.mkdir()
    if case == "empty_class":
        (src / "c").mkdir()
    if case == "split_root":
        src = tmp_path / "dataset"
        fake_folder(src / "train", {"a": 3})
    with pytest.raises(UserError, match=message):
        make_subset(src, out, n)


def test_allow_fewer_keeps_every_image_of_a_short_class(tmp_path):
    src = fake_folder(tmp_path / "src", {"a": 7, "b": 5})
    assert make_subset(src, tmp_path / "sub", 6, allow_fewer=True).counts == {"a": 6, "b": 5}


def test_cli(tmp_path, capsys):
    src = fake_folder(tmp_path / "src", {"a": 4, "b": 4})
    out = tmp_path / "sub"
    argv = ["data", "subset", "--data", str(src), "--out", str(out), "--per-class", "2", "--seed", "1"]
    assert main(argv) == 0
    assert "wrote 4 files: 4 images of 2 classes (2 per class, symlinks)" in capsys.readouterr().out
    assert main([*argv[:-4], "--per-class", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("semmae data subset: error: --per-class 9 is more than") and "\n" not in err
