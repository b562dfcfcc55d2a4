"""``--overwrite`` and a user's file *inside* a folder semmae made (``checkpoints/``, ``tb/``, an export's
``encoder/``): the owner marker records every file semmae writes below the top level (format 2), so such a file is
never deleted with its folder. The folder is refused, naming the file, and left byte-identical; once the file is
moved out, ``--overwrite`` deletes exactly what semmae recorded. Before format 2 a listed folder was deleted whole,
with whatever a user had put inside it."""

from __future__ import annotations

import json
import os

import pytest
from _helpers import (
    folder_snapshot,
    micro_pretrain_argv,
    one_error_line,
    tiny_encoder_checkpoint,
    write_image_folder,
)

from semmae.cli import main
from semmae.errors import UserError
from semmae.utils.ownership import (
    OWNER_NAME,
    MarkerError,
    Owner,
    delete_owned,
    read_owner,
    safe_path,
    unlisted_entries,
    write_owner,
)
from semmae.utils.rundir import claim_run_dir

CPU = ["--device", "cpu", "--num-workers", "0"]
MICRO = ["--img-size", "32", "--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=4, size=32)


_pretrain = micro_pretrain_argv


def test_a_users_file_inside_a_runs_checkpoints_or_tb_folder_is_never_deleted(images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    owner = read_owner(out)
    ckpts = [f for f in owner.files if f.startswith("checkpoints/")]
    events = [f for f in owner.files if f.startswith("tb/events.out.tfevents.")]
    assert "checkpoints/latest" in ckpts and len(ckpts) == 2, (
        owner.files
    )  # the pointer and the one checkpoint
    assert len(events) == 1 and (out / events[0]).is_file(), owner.files  # the event file, by its exact name
    for rel in ("checkpoints/my-best-so-far.pth", "tb/notes.txt"):
        (out / rel).write_bytes(b"the user's own")
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    err = one_error_line(capsys)
    assert "checkpoints/my-best-so-far.pth, tb/notes.txt, which the run did not write" in err, err
    assert folder_snapshot(out) == before  # refused whole: nothing deleted
    (out / "tb" / "notes.txt").unlink()
    (out / "checkpoints" / "my-best-so-far.pth").rename(tmp_path / "my-best-so-far.pth")
    assert main([*argv, "--overwrite"]) == 0
    assert "--overwrite: deleted the previous run" in capsys.readouterr().out
    assert not (out / events[0]).exists()  # the old run's event file went; the new run wrote its own
    assert unlisted_entries(out, read_owner(out), deep=True) == []


def test_a_marker_from_before_files_were_recorded_refuses_overwrite_but_resumes(images, tmp_path, capsys):
    """A format-1 marker lists ``checkpoints`` but not the files in it: nothing tells a user's file there from
    the run's, so ``--overwrite`` refuses in one line and deletes nothing; ``--resume`` still continues the run."""
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    raw = json.loads((out / OWNER_NAME).read_text())
    raw.pop("files"), raw.pop("kept")
    raw["format"] = 1
    (out / OWNER_NAME).write_text(json.dumps(raw))
    assert read_owner(out).files is None
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    err = one_error_line(capsys)
    assert "a folder whose files an older semmae did not record" in err and "checkpoints" in err, err
    assert folder_snapshot(out) == before
    assert main([*argv, "--resume", "auto"]) == 0
    assert read_owner(out).files is None  # still unknown: what it wrote before is not claimed afterwards


def test_a_trackers_store_is_kept_by_overwrite(tmp_path, capsys):
    """A kept entry (W&B's ``wandb/``, MLflow's store) is written by the tracker library, file by file: semmae
    never deletes it nor searches it; ``--overwrite`` deletes the rest and keeps it listed as kept."""
    out = tmp_path / "run"
    (out / "wandb" / "run-1" / "files").mkdir(parents=True)
    (out / "wandb" / "run-1" / "files" / "output.log").write_text("w&b's own\n")
    (out / "config.yaml").write_text("seed: 0\n")
    (out / "wandb-run-id").write_text("abcd\n")
    write_owner(
        out,
        Owner(kind="run", verb="pretrain", entries=["config.yaml", "wandb", "wandb-run-id"], kept=["wandb"]),
    )
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert (out / "wandb" / "run-1" / "files" / "output.log").read_text() == "w&b's own\n"
    assert not (out / "config.yaml").exists() and not (out / "wandb-run-id").exists()
    owner = read_owner(out)
    assert "wandb" in owner.entries and owner.kept == ["wandb"]


def test_delete_owned_removes_recorded_files_and_only_the_folders_they_emptied(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-1.pth").write_bytes(b"w")
    (out / "checkpoints" / ".ckpt-1.pth.abcd1234.tmp").write_bytes(b"half")  # a killed atomic write of it
    (out / "vis" / "deep").mkdir(parents=True)
    (out / "vis" / "deep" / "a.png").write_bytes(b"png")
    (out / "kept-by-hand").mkdir()
    (out / "kept-by-hand" / "mine.txt").write_text("mine")
    owner = Owner(
        kind="run",
        verb="pretrain",
        entries=["checkpoints", "kept-by-hand", "vis"],
        files=["checkpoints/ckpt-1.pth", "vis/deep/a.png"],
    )
    assert unlisted_entries(out, owner, deep=True) == ["kept-by-hand/mine.txt"]
    removed = delete_owned(out, owner)  # called without the check: still deletes only what is recorded
    assert removed == ["checkpoints", "vis"]
    assert (out / "kept-by-hand" / "mine.txt").read_text() == "mine"
    assert owner.entries == ["kept-by-hand"] and owner.files == []


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a//b", "a/./b", "a/../../b", "", "a\\b"])
def test_a_recorded_path_outside_the_folder_is_refused(tmp_path, rel):
    with pytest.raises(MarkerError):
        safe_path(tmp_path, rel)


def test_a_marker_recording_a_file_through_a_link_out_of_the_folder_leaves_the_folder_alone(tmp_path, capsys):
    """A planted marker (or a folder a user replaced by a link) that records ``checkpoints/x`` where
    ``checkpoints`` points elsewhere: the marker is refused, and nothing there is deleted."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.pth").write_bytes(b"precious")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(elsewhere, out / "checkpoints")
    write_owner(out, Owner(kind="run", verb="pretrain", entries=["checkpoints"], files=["checkpoints/x.pth"]))
    with pytest.raises(MarkerError, match="lies outside the folder"):
        read_owner(out)
    with pytest.raises(UserError):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert (elsewhere / "x.pth").read_bytes() == b"precious"


def test_a_users_file_inside_a_part_exports_encoder_folder_is_never_deleted(images, tmp_path, capsys):
    enc = tiny_encoder_checkpoint(tmp_path / "encoder.pth")
    run = tmp_path / "parts-run"
    argv = [
        *["parts", "train", "--data", str(images), "--encoder-checkpoint", str(enc), *MICRO, *CPU],
        *["--decoder-dim", "16", "--decoder-min-dim", "8", "--proj-dim", "16", "--panel-images", "2"],
    ]
    assert main([*argv, "--out", str(run)]) == 0
    out = tmp_path / "exported"
    export = ["export", "--checkpoint", str(run), "--out", str(out)]
    assert main(export) == 0
    assert {"encoder/config.json", "encoder/model.safetensors"} <= set(read_owner(out).files)
    (out / "encoder" / "my-notes.md").write_text("how I use it\n")
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*export, "--overwrite"]) == 2
    assert "encoder/my-notes.md, which semmae export did not write" in one_error_line(capsys)
    assert folder_snapshot(out) == before
    (out / "encoder" / "my-notes.md").unlink()
    assert main([*export, "--overwrite"]) == 0


def test_keep_last_never_deletes_a_users_copy_among_the_checkpoints(tmp_path):
    """A run drops its own checkpoints past ``keep_last``, never a file of the same name pattern a user put there
    (a copy of an earlier checkpoint)."""
    from semmae.engine.checkpoint import CheckpointManager
    from semmae.models.checkpoint_schema import TrainState

    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "ckpt-000000000.pth").write_bytes(b"the user's copy")
        ckpts = CheckpointManager(out, keep_last=1)
        for step in (1, 2, 3):
            ckpts.save(TrainState(step=step, model={}))
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt-000000000.pth", "ckpt-000000003.pth", "latest"], names
    assert (out / "checkpoints" / "ckpt-000000000.pth").read_bytes() == b"the user's copy"


def test_overwrite_never_empties_a_folder_with_a_run_going_on_inside_it(tmp_path):
    """A run folder that records a nested run's files (a demo's stage, an evaluation made in the same process)
    while another process now continues that nested run: ``--overwrite`` of the outer folder is refused."""
    from _helpers import live_run

    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False).log(1, loss=1.0)
        with claim_run_dir(out / "eval" / "knn", "knn", resume=False, overwrite=False) as inner:
            inner.start(tensorboard=False).log(0, top1=1.0)
    assert "eval/knn/log.jsonl" in read_owner(out).files
    with live_run(out / "eval" / "knn", verb="knn"):
        with pytest.raises(UserError, match=r"holds .*eval/knn, the folder of a run that is still going"):
            claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert (out / "eval" / "knn" / "log.jsonl").is_file()


# -- the second hostile round on file-by-file deletion (each test fails on the code before its fix) ---------------
def _finished_run(out, *files: str):
    """A finished `semmae pretrain` run made through the run-folder API, with ``files`` written atomically."""
    from semmae.utils.io import atomic_write_bytes

    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False).log(1, loss=1.0)
        for rel in files:
            atomic_write_bytes(out / rel, b"semmae's " + rel.encode())
    return out


def test_only_semmaes_own_temporaries_are_swept_and_never_a_live_runs(tmp_path):
    """A user's ``.draft.tmp`` (anywhere) is theirs: a continued run leaves it, ``--overwrite`` refuses it; the
    temporary a killed atomic write of a recorded file left is swept; the in-flight temporary of another process's
    run nested in the folder is left alone."""
    from _helpers import live_run

    out = _finished_run(tmp_path / "run", "checkpoints/ckpt-1.pth")
    mine = {".draft.tmp": b"notes", "checkpoints/.best-copy.tmp": b"my copy"}
    for rel, data in mine.items():
        (out / rel).write_bytes(data)
    orphan = (
        out / "checkpoints" / ".ckpt-1.pth.k3j9x2ab.tmp"
    )  # what a kill mid-write of a recorded file leaves
    orphan.write_bytes(b"half")
    with live_run(out / "eval" / "knn", verb="knn"):
        inflight = out / "eval" / "knn" / ".features.pt.abcd1234.tmp"
        inflight.write_bytes(b"being written")
        with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
            run.start(tensorboard=False)
        assert inflight.read_bytes() == b"being written"
    assert not orphan.exists()
    assert all((out / rel).read_bytes() == data for rel, data in mine.items())
    shutil_rmtree(out / "eval")
    with pytest.raises(UserError, match=r"holds checkpoints/.best-copy.tmp, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)


def shutil_rmtree(path):
    import shutil

    shutil.rmtree(path)


def test_a_continued_run_never_replaces_a_users_file_under_a_name_it_writes(tmp_path):
    from semmae.utils.io import atomic_write_bytes

    out = _finished_run(tmp_path / "run", "checkpoints/ckpt-2.pth")
    (out / "checkpoints" / "ckpt-4.pth").write_bytes(b"the user's own")
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False)
        with pytest.raises(UserError, match=r"ckpt-4.pth exists and the run in .* did not write it"):
            atomic_write_bytes(out / "checkpoints" / "ckpt-4.pth", b"weights")
        atomic_write_bytes(out / "checkpoints" / "ckpt-2.pth", b"its own: replaced")
    assert (out / "checkpoints" / "ckpt-4.pth").read_bytes() == b"the user's own"
    assert "checkpoints/ckpt-4.pth" not in read_owner(out).files


def test_a_checkpoint_the_run_rotated_away_is_no_longer_its_own(tmp_path):
    """keep_last deletes an older checkpoint and forgets it: a backup the user restores under that name is theirs
    (``--overwrite`` refuses, a continued run's rotation keeps it)."""
    from semmae.engine.checkpoint import CheckpointManager
    from semmae.models.checkpoint_schema import TrainState

    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
        ckpts = CheckpointManager(out, keep_last=1)
        for step in (1, 2):
            ckpts.save(TrainState(step=step, model={}))
    assert "checkpoints/ckpt-000000001.pth" not in read_owner(out).files
    (out / "checkpoints" / "ckpt-000000001.pth").write_bytes(b"my backup")
    with pytest.raises(UserError, match=r"holds checkpoints/ckpt-000000001.pth, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False)
        CheckpointManager(out, keep_last=1).save(TrainState(step=3, model={}))
    assert (out / "checkpoints" / "ckpt-000000001.pth").read_bytes() == b"my backup"
    assert not (out / "checkpoints" / "ckpt-000000002.pth").exists()


def test_keep_last_in_a_run_from_before_files_were_recorded_drops_only_what_it_saved(tmp_path):
    from semmae.engine.checkpoint import CheckpointManager
    from semmae.models.checkpoint_schema import TrainState

    out = _finished_run(tmp_path / "run", "checkpoints/ckpt-000000002.pth")
    raw = json.loads((out / OWNER_NAME).read_text())
    raw["files"], raw["format"] = None, 1  # what semmae 0.x left
    (out / OWNER_NAME).write_text(json.dumps(raw))
    (out / "checkpoints" / "ckpt-000000001.pth").write_bytes(b"the user's copy")
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False)
        ckpts = CheckpointManager(out, keep_last=1)
        for step in (3, 4):
            ckpts.save(TrainState(step=step, model={}))
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt-000000001.pth", "ckpt-000000002.pth", "ckpt-000000004.pth", "latest"], names


def test_overwrite_counts_what_a_nested_semmae_folder_records(tmp_path):
    """A run made inside another run's folder by another process (an evaluation rerun by hand in a demo's
    folder) records its new files in its own marker only: the outer ``--overwrite`` counts them as semmae's."""
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False).log(1, loss=1.0)
        with claim_run_dir(out / "eval" / "knn", "knn", resume=False, overwrite=False) as inner:
            inner.start(tensorboard=False).log(0, top1=1.0)
    _finished_run(
        out / "eval" / "knn2"
    )  # not in the outer marker: the outer refuses it, as any unlisted entry
    with claim_run_dir(out / "eval" / "knn", "knn", resume=False, overwrite=True) as inner:  # by hand, later
        from semmae.utils.io import atomic_write_bytes

        inner.start(tensorboard=False)
        atomic_write_bytes(out / "eval" / "knn" / "results.json", b"{}")
    assert "eval/knn/results.json" not in read_owner(out).files
    with pytest.raises(UserError, match=r"holds eval/knn2/"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    shutil_rmtree(out / "eval" / "knn2")
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert not (out / "eval").exists()


def test_a_lock_file_that_is_a_link_is_never_written_through(tmp_path):
    thesis = tmp_path / "home" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("four years of work\n")
    for name, target in (("linked", thesis), ("dangling", tmp_path / "home" / "created.txt")):
        out = tmp_path / name
        out.mkdir()
        os.symlink(target, out / ".semmae.lock")
        with pytest.raises(UserError, match=r"is a link, not a semmae lock file"):
            claim_run_dir(out, "pretrain", resume=False, overwrite=False)
    assert thesis.read_text() == "four years of work\n"
    assert sorted(p.name for p in thesis.parent.iterdir()) == ["thesis.txt"]


def test_a_log_that_is_a_link_is_never_appended_through(tmp_path):
    from semmae.utils.io import open_for_append

    mine = tmp_path / "mine.txt"
    mine.write_text("mine\n")
    os.symlink(mine, tmp_path / "log.jsonl")
    with pytest.raises(OSError, match="never writes through"):
        open_for_append(tmp_path / "log.jsonl")
    assert mine.read_text() == "mine\n"


def test_the_traceback_of_an_internal_error_is_listed_as_the_runs(tmp_path):
    from semmae.utils.ownership import note_after_run

    out = _finished_run(tmp_path / "run")
    (out / "error.log").write_text("Traceback ...\n")
    note_after_run(out, "error.log")
    assert "error.log" in read_owner(out).entries
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert not (out / "error.log").exists()


def test_a_users_error_log_is_never_listed_as_the_runs(tmp_path, monkeypatch, capsys):
    """The traceback of an internal error is appended to ``error.log``; only an ``error.log`` semmae made is listed
    in the marker (a job script's ``--error=<run>/error.log`` stays the user's)."""
    import semmae.cli as cli

    out = _finished_run(tmp_path / "run")
    (out / "error.log").write_text("my scheduler's log\n")
    err = RuntimeError("an unexpected bug")
    err.semmae_run_dir = out
    cli._write_traceback(err)
    assert "error.log" not in read_owner(out).entries
    assert (out / "error.log").read_text().startswith("my scheduler's log\n")
    (out / "error.log").unlink()
    cli._write_traceback(err)
    assert "error.log" in read_owner(out).entries


def test_a_tracker_id_file_that_is_a_link_is_replaced_never_written_through(tmp_path):
    from semmae.utils.trackers import _read_id

    outside = tmp_path / "elsewhere.txt"
    link = tmp_path / "mlflow-run-id"
    link.symlink_to(outside)
    assert _read_id(link) == ""
    from semmae.utils.io import atomic_write_text

    atomic_write_text(link, "abc\n")
    assert not outside.exists() and not link.is_symlink() and link.read_text() == "abc\n"


def test_a_nested_markers_temporary_is_semmaes(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
        with claim_run_dir(out / "eval" / "knn", "knn", resume=False, overwrite=False) as inner:
            inner.start(tensorboard=False).log(0, top1=1.0)
    (out / "eval" / "knn" / "..semmae-owner.json.ab12cd34.tmp").write_text("{")  # a kill mid marker write
    assert unlisted_entries(out, read_owner(out), deep=True) == []
