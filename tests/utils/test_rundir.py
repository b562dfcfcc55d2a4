"""Run-directory ownership (issue 18): one writer, one run, nothing written before the checks pass."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
from _helpers import folder_snapshot, live_run, user_folder

from semmae.errors import UserError
from semmae.utils.io import atomic_write_bytes
from semmae.utils.ownership import OWNER_NAME, Owner, read_owner, write_owner
from semmae.utils.run_housekeeping import truncate_log
from semmae.utils.run_lock import LOCK_NAME, exclusive
from semmae.utils.run_logger import read_log
from semmae.utils.rundir import check_out_outside, claim_run_dir


def _snapshot(root):
    """{relative path: bytes} of every file under root except the lock file."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _old_run(root, verb="pretrain"):
    """A finished `semmae <verb>` run as semmae leaves it: its files and the owner marker that lists them."""
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "ckpt-000000003.pth").write_bytes(b"ckpt")
    (root / "config.yaml").write_text("seed: 0\n")
    (root / "log.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0, "time": 1.0}) + "\n" for s in (1, 2, 3, 4))
    )
    write_owner(
        root,
        Owner(
            kind="run",
            verb=verb,
            entries=["checkpoints", "config.yaml", "log.jsonl"],
            files=["checkpoints/ckpt-000000003.pth"],
        ),
    )
    return _snapshot(root)


def test_empty_or_missing_folder_is_claimed_and_released(tmp_path):
    out = tmp_path / "a" / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        assert (out / LOCK_NAME).is_file()
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["holder"] == "pretrain" and "verb" not in holder
        logger = run.start(tensorboard=False)
        logger.log(1, loss=0.5)
    # released: the same process can claim it again (to continue it)
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False):
        pass


def test_second_writer_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False):
        with pytest.raises(UserError, match=r"in use by another run \(pid \d+ .*`semmae pretrain`\)") as e:
            claim_run_dir(out, "pretrain", resume=True, overwrite=False)
        assert "\n" not in str(e.value)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from semmae.utils.rundir import claim_run_dir
    run = claim_run_dir(sys.argv[1], "pretrain", resume=False, overwrite=False)
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_kill_9_never_leaves_a_stale_lock(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            claim_run_dir(out, "pretrain", resume=True, overwrite=False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False):  # the OS dropped the dead one's lock
        pass


def test_fresh_run_into_a_run_is_refused_and_leaves_it_as_it_was(tmp_path):
    out = tmp_path / "run"
    before = _old_run(out)
    with pytest.raises(
        UserError, match=r"already holds a run \(checkpoints, config.yaml.*--resume auto.*--overwrite"
    ):
        claim_run_dir(out, "pretrain", resume=False, overwrite=False, resume_hint="--resume auto")
    assert _snapshot(out) == before


def test_overwrite_deletes_the_old_run_only_at_start(tmp_path, capsys):
    out = tmp_path / "run"
    before = _old_run(out)
    old_id = read_owner(out).id
    run = claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert _snapshot(out) == before  # the verb's own checks run before anything is deleted
    run.start(tensorboard=False)
    run.release()
    assert list(_snapshot(out)) == [OWNER_NAME]  # the new run's marker, nothing of the old run
    assert read_owner(out).id != old_id
    assert "deleted the previous run" in capsys.readouterr().out


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(
        UserError, match=r"was not created by `semmae pretrain` \(it has no .semmae-owner.json\)"
    ):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert (out / "thesis.tex").read_text() == "precious"


def test_a_continued_run_never_adopts_a_users_file_beside_it(tmp_path):
    """A user's notes put beside a finished run are not the run's: continuing the run (``--resume``, a ``knn``
    rerun) must not list them in the owner marker, or a later ``--overwrite`` would delete them."""
    out = tmp_path / "run"
    _old_run(out)
    (out / "notes.md").write_text("what I learned from this run\n")
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False).log(5, loss=0.5)
        atomic_write_bytes(out / "vis" / "step5.png", b"png")  # a new entry the continued run writes is noted
    assert "notes.md" not in read_owner(out).entries and "vis" in read_owner(out).entries
    with pytest.raises(UserError, match=r"holds notes.md, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert (out / "notes.md").read_text() == "what I learned from this run\n"


def test_a_file_put_into_a_run_folder_while_it_runs_stays_the_users(tmp_path):
    """The owner marker lists what the run writes, never what it finds: notes dropped into the folder of a run
    that is going (then a log record, an atomic write, the release) are not the run's, so ``--overwrite`` refuses
    the folder, naming them; the run's own entries, an empty folder it made and a nested run's folder are its."""
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        logger = run.start(tensorboard=False)
        (out / "notes.md").write_text("mine\n")
        (out / "mine").mkdir()
        (out / "mine" / "plot.png").write_bytes(b"my plot")
        logger.log(1, loss=0.5)
        atomic_write_bytes(out / "checkpoints" / "ckpt-1.pth", b"weights")
        (out / "vis").mkdir()  # made, never written: empty
        with claim_run_dir(out / "eval" / "knn", "knn", resume=False, overwrite=False) as inner:
            inner.start(tensorboard=False).log(0, top1=1.0)
        logger.close()
    entries = read_owner(out).entries
    assert entries == ["checkpoints", "eval", "log.jsonl"], entries  # no config given: no config.yaml
    before = folder_snapshot(out)
    with pytest.raises(UserError, match=r"holds mine, notes.md, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert folder_snapshot(out) == before
    (out / "notes.md").unlink()
    shutil.rmtree(out / "mine")
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert not (out / "checkpoints").exists() and not (out / "eval").exists() and (out / "vis").is_dir()


def test_resume_and_overwrite_together_and_another_verbs_run_are_refused(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="pass one of them"):
        claim_run_dir(out, "pretrain", resume=True, overwrite=True)
    with claim_run_dir(out, "linprobe", resume=True, overwrite=False) as run:
        run.start(tensorboard=False).log(0, top1=1.0)
    with pytest.raises(UserError, match="holds a `semmae linprobe` run"):
        claim_run_dir(out, "pretrain", resume=True, overwrite=False)


def test_start_drops_log_records_past_the_resumed_step_and_orphaned_temporaries(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    with open(out / "log.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')  # a line torn by kill -9
    orphan = out / "checkpoints" / ".ckpt-000000003.pth.k2j3h4m5.tmp"  # a kill mid-write of a recorded file
    orphan.write_bytes(b"half")
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        assert orphan.exists()  # claiming writes nothing
        run.start(keep_log_until=2, tensorboard=False).log(3, loss=0.1)
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2, 3]
    assert not orphan.exists() and (out / "checkpoints" / "ckpt-000000003.pth").exists()


def test_truncate_log_keeps_everything_up_to_the_step(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 1, 2, 2, 3)))
    assert truncate_log(path, 2) == 1
    assert [r["step"] for r in read_log(path)] == [0, 1, 2, 2]
    assert truncate_log(path, -1) == 4 and read_log(path) == []


def test_a_file_as_run_folder_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        claim_run_dir(f, "pretrain", resume=False, overwrite=False)


def test_a_run_that_never_started_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False):
        assert out.is_dir()  # e.g. its data folder turns out to be missing here
    assert not (tmp_path / "new").exists()
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
    assert out.is_dir()


def test_a_refused_claim_of_a_users_folder_leaves_it_exactly_as_it_was(tmp_path):
    out = user_folder(tmp_path / "home")
    before = folder_snapshot(out)
    for resume, overwrite in ((False, False), (True, False), (False, True)):
        with pytest.raises(UserError, match="thesis.txt"):
            claim_run_dir(out, "knn", resume=resume, overwrite=overwrite)
        assert folder_snapshot(out) == before  # not even a lock file


def test_resume_into_a_folder_that_holds_no_run_is_refused(tmp_path):
    out = user_folder(tmp_path / "home")
    with pytest.raises(UserError, match=r"is not empty \(.*thesis.txt\) and holds no `semmae knn` run"):
        claim_run_dir(out, "knn", resume=True, overwrite=False)


def test_overwrite_inside_a_live_run_is_refused(tmp_path):
    with live_run(tmp_path / "running", "bootstrap") as running:
        inner = running / "probe"
        _old_run(inner)
        before = folder_snapshot(running)
        with pytest.raises(
            UserError, match=r"lies inside .*running, the folder of a run that is still going"
        ):
            claim_run_dir(inner, "linprobe", resume=False, overwrite=True)
        assert folder_snapshot(running) == before
    with claim_run_dir(inner, "pretrain", resume=False, overwrite=True) as run:  # the run has ended
        run.start(tensorboard=False)


@dataclass
class _Cfg:
    data: str
    seed: int


def test_resume_with_other_data_is_refused_naming_both_before_writing(tmp_path, capsys):
    out, a, b = tmp_path / "run", tmp_path / "a", tmp_path / "b"
    a.mkdir()
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(_Cfg(data=str(a), seed=0), tensorboard=False).log(1, loss=1.0)
    before = folder_snapshot(out)
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        with pytest.raises(UserError, match=rf"--data {b} is not {a}, the --data of the run in"):
            run.start(_Cfg(data=str(b), seed=0), keep_log_until=0, tensorboard=False)
    assert folder_snapshot(out) == before
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(_Cfg(data=f"{a}/", seed=0), keep_log_until=1, tensorboard=False)
    a.rmdir()  # the run's data is gone (a per-job local copy): another path continues it, with a note
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(_Cfg(data=str(b), seed=0), keep_log_until=1, tensorboard=False)
    assert f"--data {b} replaces {a}/, which no longer exists" in capsys.readouterr().out


def test_out_inside_the_data_is_refused(tmp_path):
    check_out_outside(tmp_path / "elsewhere", {"--data": str(tmp_path / "imgs")})
    for out in (tmp_path / "imgs", tmp_path / "imgs" / "pack"):
        with pytest.raises(UserError, match=r"--out .* lies inside --data .*imgs"):
            check_out_outside(out, {"--data": str(tmp_path / "imgs"), "--val": None})


def test_exclusive_never_takes_over_a_users_file(tmp_path):
    # plain text, and JSON without semmae's holder record (a `composer.lock`): neither is semmae's lock
    for name, text in (("c.parts.lock", "my notes\n"), ("composer.lock", '{"packages": []}\n')):
        mine = tmp_path / name
        mine.write_text(text)
        with pytest.raises(UserError, match="is not a semmae lock file"):
            with exclusive(mine, "part cache c.parts", "parts export"):
                pass
        assert mine.read_text() == text
    with exclusive(tmp_path / "d.lock", "part cache d", "parts export"):  # its own (or a killed run's) lock
        pass
