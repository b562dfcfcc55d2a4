"""`semmae demo --out` owns its folder (issue 18): another folder's files are never mixed into a demo run."""

from __future__ import annotations

from semmae.cli import main


def test_demo_refuses_a_folder_that_holds_something_else(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--budget", "micro", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no `semmae demo` run" in err
    assert sorted(p.name for p in out.iterdir() if p.name != ".semmae.lock") == ["notes.txt"]
    # --overwrite refuses to delete what does not look like a run
    assert main(["demo", "--out", str(out), "--budget", "micro", "--no-progress", "--overwrite"]) == 2
    assert "was not created by `semmae demo`" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
