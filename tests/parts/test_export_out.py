"""Issue 37: `parts export --out` - ``cache/`` is ``cache``, ``.`` is refused with nothing created, a refused export
leaves no empty folder behind, and ``--overwrite`` is refused while a reader (a pretrain) holds the cache."""

from __future__ import annotations

from _helpers import folder_snapshot, live_run, one_error_line

from semmae.cli import main
from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCache
from semmae.data.pretrain_dataset import PartImageDataset

from .conftest import IMG


def _export(synth, encoder_ckpt, out, *extra):
    argv = ["parts", "export", "--source", "attention", "--data", str(synth / "val"), "--device", "cpu"]
    argv += ["--encoder-checkpoint", str(encoder_ckpt), "--img-size", str(IMG), "--num-workers", "0"]
    return main([*argv, "--out", str(out), *extra])


def test_a_trailing_slash_names_the_same_cache(tmp_path, synth, encoder_ckpt, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _export(synth, encoder_ckpt, "cache/") == 0
    assert "part cache: cache (" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert ".lock" not in {p.name for p in (tmp_path / "cache").iterdir()}
    PartCache.open("cache", ImageFolderDataset(synth / "val").relative_paths)
    assert _export(synth, encoder_ckpt, "cache/") == 2
    one_error_line(capsys, "part cache cache already exists", "--overwrite")
    assert _export(synth, encoder_ckpt, "cache/", "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_the_current_folder_is_refused_with_nothing_created(
    tmp_path, synth, encoder_ckpt, monkeypatch, capsys
):
    here = tmp_path / "work"
    (here / "notes").mkdir(parents=True)
    (here / "thesis.txt").write_text("four years of work\n")
    monkeypatch.chdir(here)
    before = folder_snapshot(tmp_path)
    for out in (".", "./", "..", "notes/.."):
        for extra in ((), ("--overwrite",)):
            assert _export(synth, encoder_ckpt, out, *extra) == 2
            one_error_line(capsys, f"--out {out} names a folder that holds other things")
            assert folder_snapshot(tmp_path) == before


def test_a_refused_export_leaves_no_empty_folder(tmp_path, synth, encoder_ckpt, capsys):
    with live_run(tmp_path / "running") as running:
        before = folder_snapshot(running)
        assert _export(synth, encoder_ckpt, running / "deep" / "er" / "c.parts") == 2
        one_error_line(capsys, "the folder of a run that is still going")
        assert folder_snapshot(running) == before


def test_overwrite_is_refused_while_a_pretrain_dataset_reads_the_cache(tmp_path, synth, encoder_ckpt, capsys):
    out = tmp_path / "c.parts"
    assert _export(synth, encoder_ckpt, out) == 0
    capsys.readouterr()
    reading = PartImageDataset(synth / "val", out, img_size=IMG, patch_size=IMG // 4)
    before = folder_snapshot(tmp_path)
    assert _export(synth, encoder_ckpt, out, "--overwrite") == 2
    one_error_line(capsys, f"part cache {out} is being read by a running process", "another --out")
    assert folder_snapshot(tmp_path) == before
    reading.cache.release()  # the run ended
    assert _export(synth, encoder_ckpt, out, "--overwrite") == 0
