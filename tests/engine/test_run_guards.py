"""`semmae pretrain` against a hostile but fair user (issue 18): a run folder belongs to one run, and every failure
is one line with exit 2 (an internal error: one line, exit 1, the traceback in the run folder's error.log)."""

from __future__ import annotations

import errno
import os
import shutil

import pytest
from _helpers import folder_snapshot, run_killed_at

from semmae.cli import main
from semmae.engine.checkpoint import CheckpointManager
from semmae.utils.run_lock import LOCK_NAME
from semmae.utils.run_logger import read_log
from semmae.utils.rundir import claim_run_dir

FAST = ["--masking", "random", "--epochs", "1", "--num-workers", "0"]


def _snapshot(root):
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def run_once(engine_images, micro_args, tmp_path):
    out = tmp_path / "run"
    assert main(micro_args(engine_images, out, *FAST, "--ckpt-every", "2")) == 0
    return out


def test_fresh_run_into_a_run_is_refused_and_changes_nothing(run_once, engine_images, micro_args, capsys):
    before = _snapshot(run_once)
    capsys.readouterr()
    assert main(micro_args(engine_images, run_once, *FAST)) == 2
    _one_line_error(capsys, "already holds a run", "--resume auto", "--overwrite")
    assert _snapshot(run_once) == before


def test_refused_resume_rewrites_nothing(run_once, engine_images, micro_args, capsys):
    before = _snapshot(run_once)
    capsys.readouterr()
    # another effective batch: the checkpoint is refused, and config.yaml / tb/ stay as they were
    assert main(micro_args(engine_images, run_once, *FAST, "--resume", "auto", "--batch-size", "2")) == 2
    _one_line_error(capsys, "effective batch")
    assert _snapshot(run_once) == before


def test_overwrite_starts_again(run_once, engine_images, micro_args, capsys):
    assert main(micro_args(engine_images, run_once, *FAST, "--ckpt-every", "3", "--overwrite")) == 0
    assert "deleted the previous run" in capsys.readouterr().out
    assert [p.name for p in CheckpointManager(run_once).list()] == [
        "ckpt-000000003.pth",
        "ckpt-000000004.pth",
    ]
    assert [r["step"] for r in read_log(run_once / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]


def test_resume_auto_with_overwrite_starts_again_and_reads_nothing_old(
    run_once, engine_images, micro_args, capsys
):
    """--overwrite wins over --resume auto (the default of the evaluation stages): the old run is deleted and
    nothing of it is resumed (the old checkpoint at step 4 would have ended this 1-epoch run at once)."""
    argv = micro_args(engine_images, run_once, *FAST, "--ckpt-every", "3", "--resume", "auto", "--overwrite")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "deleted the previous run" in out and "resumed from" not in out
    assert [r["step"] for r in read_log(run_once / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert [p.name for p in CheckpointManager(run_once).list()] == [
        "ckpt-000000003.pth",
        "ckpt-000000004.pth",
    ]


def test_second_writer_is_refused(engine_images, micro_args, tmp_path, capsys):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False):
        assert main(micro_args(engine_images, out, *FAST, "--resume", "auto")) == 2
    _one_line_error(capsys, "in use by another run")
    assert not (out / "config.yaml").exists()


def test_resume_auto_skips_a_damaged_newest_checkpoint_and_says_so(
    run_once, engine_images, micro_args, capsys
):
    mgr = CheckpointManager(run_once)
    assert [p.name for p in mgr.list()] == ["ckpt-000000002.pth", "ckpt-000000004.pth"]
    damaged = mgr.path_for(4)  # damaged on disk (its size and time unchanged), and `latest` names it
    st = damaged.stat()
    damaged.write_bytes(b"\0" * st.st_size)
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    (mgr.dir / ".ckpt-000000004.pth.x1y2z3w4.tmp").write_bytes(b"half")  # what a kill mid-write leaves
    capsys.readouterr()
    assert main(micro_args(engine_images, run_once, *FAST, "--resume", "auto")) == 0
    out = capsys.readouterr().out
    assert "skipped ckpt-000000004.pth" in out and "resumed from" in out and "ckpt-000000002.pth" in out
    assert not list(mgr.dir.glob(".*.tmp"))
    # the steps after the checkpoint are logged once
    assert [r["step"] for r in read_log(run_once / "log.jsonl") if "loss" in r] == list(range(1, 5))
    capsys.readouterr()  # a longer schedule is another run: refused, naming the change
    assert main(micro_args(engine_images, run_once, *FAST, "--epochs", "2", "--resume", "auto")) == 2
    _one_line_error(capsys, "other settings (--epochs 1 -> 2)")


def test_corrupt_image_in_a_worker_is_the_same_one_line(engine_images, micro_args, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(engine_images, data)
    (data / "a" / "0.png").write_bytes(b"not an image")
    lines = []
    for workers in ("0", "1"):
        argv = micro_args(data, tmp_path / f"run{workers}", "--masking", "random", "--num-workers", workers)
        assert main(argv) == 2
        lines.append(_one_line_error(capsys, "0.png", "--skip-bad-images"))
    assert lines[0].replace("run0", "") == lines[1].replace("run1", "")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--device", "tpu"], "--device tpu"),
        (["--clip-grad", "-1"], "--clip-grad must be > 0"),
        (["--lr", "inf"], "must be a finite number"),
        (["--blr", "nan"], "must be a finite number"),
        (["--resume", "runs/old/checkpoints/ckpt-000000004.pth", "--overwrite"], "--overwrite deletes it"),
    ],
)
def test_bad_values_are_one_line_before_anything_is_written(
    flags, needle, engine_images, micro_args, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(micro_args(engine_images, out, *FAST, *flags)) == 2
    _one_line_error(capsys, needle)
    assert not (out / "config.yaml").exists()


def test_os_error_is_one_line_naming_path_and_cause(engine_images, micro_args, tmp_path, capsys, monkeypatch):
    from semmae.engine import pretrain as engine

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "vis" / "x.png"))

    monkeypatch.setattr(engine.Pretrainer, "run", full_disk)
    assert main(micro_args(engine_images, tmp_path / "run", *FAST)) == 2
    _one_line_error(capsys, "x.png", "No space left on device")


def test_internal_error_is_one_line_with_the_traceback_in_the_run_folder(
    engine_images, micro_args, tmp_path, capsys, monkeypatch
):
    from semmae.engine import pretrain as engine

    def bug(self):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(engine.Pretrainer, "begin_run", bug)  # inside the run, its folder started
    out = tmp_path / "run"
    assert main(micro_args(engine_images, out, *FAST)) == 1
    err = _one_line_error(capsys, "internal error: ZeroDivisionError: a bug", str(out / "error.log"))
    assert "Traceback" not in err
    assert "Traceback" in (out / "error.log").read_text()


def test_an_internal_error_without_a_run_folder_does_not_land_in_an_earlier_commands_folder(
    engine_images, micro_args, tmp_path, capsys, monkeypatch
):
    """In-process callers (demo, harness, tests) run several commands: a command that claims no folder must not
    write its traceback into the folder of the command before it."""
    from semmae.export import encoder as export

    out = tmp_path / "run"
    assert main(micro_args(engine_images, out, *FAST)) == 0

    def bug(*a, **k):
        raise ZeroDivisionError("export bug")

    monkeypatch.setattr(export, "export_encoder", bug)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "e.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: export bug" in err and str(out / "error.log") not in err
    assert not (out / "error.log").exists()


def test_refused_pretrain_leaves_the_folder_byte_identical(
    run_once, engine_images, micro_args, tmp_path, capsys
):
    before = folder_snapshot(run_once)
    capsys.readouterr()
    missing = ["--eval-every", "1", "--eval-train", str(tmp_path / "nope"), "--eval-val", str(engine_images)]
    assert main(micro_args(engine_images, run_once, *FAST, "--resume", "auto", *missing)) == 2
    _one_line_error(capsys, "nope does not exist")
    assert folder_snapshot(run_once) == before
    fresh = tmp_path / "fresh"
    assert main(micro_args(engine_images, fresh, *FAST, *missing)) == 2
    _one_line_error(capsys, "nope does not exist")
    assert not fresh.exists()  # the corrected rerun is not refused as "already holds a run"


def test_resume_with_other_data_or_out_inside_the_data_is_refused(
    run_once, engine_images, micro_args, tmp_path, capsys
):
    other = tmp_path / "other"
    shutil.copytree(engine_images, other)
    before = folder_snapshot(run_once)
    capsys.readouterr()
    assert main(micro_args(other, run_once, *FAST, "--resume", "auto")) == 2
    _one_line_error(capsys, f"--data {other} is not {engine_images}")
    assert folder_snapshot(run_once) == before
    assert main(micro_args(other, other / "run", *FAST)) == 2
    _one_line_error(capsys, "lies inside --data")
    assert not (other / "run").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_sigterm_checkpoints_where_it_stops_and_exits_like_ctrl_c(
    engine_images, micro_args, tmp_path, workers
):
    out = tmp_path / "run"
    argv = micro_args(engine_images, out, "--masking", "random", "--epochs", "2", "--num-workers", workers)
    res = run_killed_at(
        2, argv, signal="SIGTERM", group=True
    )  # what a scheduler sends before it kills the job
    assert res.returncode == 130, res.stderr[-3000:]
    assert "SIGTERM: stopped at step 2" in res.stdout and "interrupted" in res.stderr
    assert [p.name for p in CheckpointManager(out).list()] == ["ckpt-000000002.pth"]
    assert main([*argv, "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == list(range(1, 9))
