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


def test_demo_overwrite_never_deletes_the_encoder_checkpoint_it_reads(tmp_path, capsys):
    """``--encoder-checkpoint`` pointing into the demo's own folder (the part encoder an earlier demo trained there):
    ``--overwrite`` would delete it before reading it; it is refused, naming the input, and nothing is deleted."""
    from semmae.utils.rundir import claim_run_dir

    out = tmp_path / "demo"
    with claim_run_dir(
        out, "demo", resume=False, overwrite=False
    ) as run:  # an earlier demo, as semmae leaves it
        run.start(tensorboard=False)
        (out / "bootstrap" / "checkpoints").mkdir(parents=True)
        (out / "bootstrap" / "checkpoints" / "ckpt-000000010.pth").write_bytes(b"a week of training")
    ckpt = out / "bootstrap" / "checkpoints" / "ckpt-000000010.pth"
    argv = ["demo", "--out", str(out), "--budget", "micro", "--no-progress", "--overwrite"]
    assert main([*argv, "--encoder-checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--encoder-checkpoint" in err and "never deletes its inputs" in err
    assert ckpt.read_bytes() == b"a week of training"
