"""A file put at a name a run records is never taken for the run's (owner markers, format 3).

The marker records a name before semmae writes the file (so a kill never leaves semmae's own file unrecorded), and
then what the file is: its inode, size and modification time (and, for a file semmae appends to, a hash of its first
bytes). Before format 3 a name recorded just before a write that a kill stopped stayed recorded, and a file a user
put there before the next claim was deleted by ``--overwrite``; so was a file a user put in place of the run's own.
Now either is refused, naming it, and the folder is left byte-identical."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from _helpers import as_older_marker, folder_snapshot, micro_pretrain_argv, one_error_line, write_image_folder

from semmae.cli import main
from semmae.errors import UserError
from semmae.utils import io, ownership
from semmae.utils.ownership import OWNER_NAME, identity, matches, read_owner, trusted
from semmae.utils.rundir import claim_run_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=4, size=32)


_pretrain = micro_pretrain_argv


def _killed_before_writing(monkeypatch, path) -> None:
    """An atomic write of ``path`` inside a held run, stopped (as by a kill) after its name was recorded and before
    any byte was written."""

    real = io.tempfile.mkstemp

    def killed(*a, prefix="", **k):
        if prefix.startswith(f".{OWNER_NAME}."):  # the marker's own write goes through
            return real(*a, prefix=prefix, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(io.tempfile, "mkstemp", killed)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_text(path, "semmae's")
    monkeypatch.undo()


def test_every_file_a_real_run_recorded_matches_its_recorded_identity(images, tmp_path):
    out = tmp_path / "run"
    assert main(_pretrain(images, out)) == 0
    owner = read_owner(out)
    assert owner.format == 3 and owner.ids is not None
    files = [r for r in (*owner.entries, *owner.files) if (out / r).is_file()]
    assert {"config.yaml", "log.jsonl", "checkpoints/latest"} <= set(files)
    assert any(r.startswith("tb/events.out.tfevents.") for r in files)
    for rel in files:
        assert rel in owner.ids and matches(out / rel, owner.ids[rel]), rel


def test_a_name_recorded_before_a_write_that_a_kill_stopped_is_not_the_runs(
    images, tmp_path, monkeypatch, capsys
):
    """The window the last format left open: recorded, killed before the write, a user's file put there."""
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
        _killed_before_writing(monkeypatch, out / "checkpoints" / "ckpt-000000099.pth")
        _killed_before_writing(monkeypatch, out / "results.json")
    owner = read_owner(out)
    assert "checkpoints/ckpt-000000099.pth" in owner.files and "results.json" in owner.entries
    assert "results.json" not in owner.ids  # named, never written
    (out / "checkpoints" / "ckpt-000000099.pth").write_bytes(b"the user's own checkpoint")
    (out / "results.json").write_text('{"mine": true}')
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    err = one_error_line(capsys, "--overwrite deletes only the run's own files")
    assert "results.json" in err and "ckpt-000000099.pth" in err
    assert folder_snapshot(out) == before
    # the user moves them out: --overwrite then deletes exactly what the run wrote
    os.rename(out / "results.json", tmp_path / "results.json")
    os.rename(out / "checkpoints" / "ckpt-000000099.pth", tmp_path / "ckpt.pth")
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "results.json").read_text() == '{"mine": true}'
    assert (tmp_path / "ckpt.pth").read_bytes() == b"the user's own checkpoint"


def test_a_users_file_put_in_place_of_the_runs_own_is_never_deleted_nor_replaced(images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    ckpt = next((out / "checkpoints").glob("ckpt-*.pth"))
    same_bytes = ckpt.read_bytes()
    ckpt.unlink()
    time.sleep(0.01)
    ckpt.write_bytes(same_bytes)  # the user's copy (a backup put back): a new file, whatever its inode
    (out / "config.yaml").unlink()
    (out / "config.yaml").write_text("my notes\n")
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    err = one_error_line(capsys, "which the run did not write")
    assert "config.yaml" in err or ckpt.name in err
    assert folder_snapshot(out) == before
    # continued, the run refuses the folder before it writes anything: it would replace the user's files
    assert main([*argv, "--resume", "auto"]) == 2
    one_error_line(capsys, "is not what the run wrote there", "move")
    assert folder_snapshot(out) == before


def test_a_file_semmae_appends_to_stays_its_own_and_an_edited_one_does_not(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        logger = run.start(tensorboard=False)
        for step in range(5):
            logger.log(step, loss=1.0 / (step + 1))
    owner = read_owner(out)
    assert trusted(out, owner, "log.jsonl")  # grown after its identity was recorded: still the run's
    with open(out / "log.jsonl", "r+b") as fh:  # a user edits its first line in place (same inode)
        fh.write(b'{"step": 7')
    assert not trusted(out, owner, "log.jsonl")
    with pytest.raises(UserError, match="holds log.jsonl, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)


def test_an_identity_is_inode_size_and_time_and_a_reused_inode_does_not_match(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"semmae")
    ident = identity(p)
    assert ident[:2] == [os.stat(p).st_ino, 6] and ident[3:] == [0, ""]
    assert matches(p, [ident])
    os.utime(p, ns=(ident[2] + 1, ident[2] + 1))  # same inode and bytes, another time: another file
    assert not matches(p, [ident])
    grown = identity(p, appended=True)
    with open(p, "ab") as fh:
        fh.write(b" appends")
    assert matches(p, [grown]) and not matches(p, [ident])
    link = tmp_path / "link"
    link.symlink_to(p)
    assert identity(link) is None and not matches(link, [grown])  # a link is never semmae's file


def test_a_marker_from_before_identities_is_taken_at_its_word_then_upgraded(images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    as_older_marker(out)
    assert main([*argv, "--resume", "auto"]) == 0
    owner = read_owner(out)
    assert owner.format == 3 and "config.yaml" in owner.ids
    assert ownership.unlisted_entries(out, owner, deep=True) == []
    assert main([*argv, "--overwrite"]) == 0


def test_an_export_never_deletes_a_file_put_in_place_of_its_own(images, tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert main(_pretrain(images, ckpt)) == 0
    out = tmp_path / "timm"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    owner = read_owner(out)
    assert all(matches(out / n, owner.ids[n]) for n in owner.entries)
    (out / "README.md").unlink()
    (out / "README.md").write_text("my own card\n")  # put in place of the export's own
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--overwrite"]) == 2
    one_error_line(capsys, "README.md")
    assert folder_snapshot(out) == before


def test_a_run_folder_copied_with_its_times_resumes_and_one_copied_without_is_refused(
    images, tmp_path, capsys
):
    import shutil

    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    kept = tmp_path / "copied-a"
    shutil.copytree(out, kept, copy_function=shutil.copy2)  # `cp -a`: new inodes, same sizes and times
    assert main([*_pretrain(images, kept), "--resume", "auto"]) == 0
    owner = read_owner(kept)
    assert owner.home == ownership.folder_identity(kept)  # re-recorded for the copy's own files
    assert ownership.unlisted_entries(kept, owner, deep=True) == []
    assert main([*_pretrain(images, kept), "--overwrite"]) == 0
    plain = tmp_path / "copied-plain"
    shutil.copytree(out, plain, copy_function=shutil.copyfile)  # plain `cp -r`: the files' times are new
    before = folder_snapshot(plain)
    capsys.readouterr()
    assert main([*_pretrain(images, plain), "--resume", "auto"]) == 2
    one_error_line(capsys, "copy a run with `cp -a` or `rsync -a`")
    assert main([*_pretrain(images, plain), "--overwrite"]) == 2
    one_error_line(capsys, "which the run did not write (or the folder was copied", "`cp -a`")
    assert folder_snapshot(plain) == before


# -- a fourth hostile round (helper scripts in the closing note) ---------------------------------------------------
def test_an_export_folder_without_its_marker_is_never_replaced(images, tmp_path, capsys):
    """A copy of an export's files (``cp e1/* hub/`` leaves the hidden marker behind) with a README of yours."""
    run = tmp_path / "run"
    assert main(_pretrain(images, run)) == 0
    first = tmp_path / "e1"
    assert main(["export", "--checkpoint", str(run), "--out", str(first)]) == 0
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "config.json").write_bytes((first / "config.json").read_bytes())
    (hub / "README.md").write_text("my model card\n")
    before = folder_snapshot(hub)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run), "--out", str(hub), "--overwrite"]) == 2
    one_error_line(capsys, "has no .semmae-owner.json", "delete it yourself")
    assert folder_snapshot(hub) == before


def test_a_log_put_into_a_running_run_is_never_appended_to_nor_deleted(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        logger = run.start(tensorboard=False)
        (out / "log.jsonl").write_text("my own log\n")  # before the run's first line
        with pytest.raises(UserError, match="log.jsonl is not the file the run in .* wrote there"):
            logger.log(1, loss=1.0)
        os.unlink(out / "log.jsonl")
        logger.log(1, loss=1.0)
        os.unlink(out / "log.jsonl")  # replaced while the run is going
        (out / "log.jsonl").write_text('{"step": 0, "mine": true}\n')
        with pytest.raises(UserError, match="is not the file the run in .* wrote there"):
            logger.log(2, loss=0.5)
    assert (out / "log.jsonl").read_text() == '{"step": 0, "mine": true}\n'
    with pytest.raises(UserError, match="holds log.jsonl, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)


@pytest.mark.parametrize(
    "note",
    [
        "# loss spiked at step 2: bad batch?\n",
        "# bad batch at step 2",  # not a torn record either
        '{"step": 2, "note": "bad batch?"}\n',  # a JSON note with a step, not a record semmae writes
        '{"step":2,"loss":1.0,"time":1.0}\n',  # a record as `jq -c` writes it
    ],
    ids=["line", "no-newline", "json-note", "compact-json"],
)
def test_a_note_appended_to_the_runs_log_makes_it_yours(images, tmp_path, capsys, note):
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    lines = len((out / "log.jsonl").read_bytes().splitlines())
    with open(out / "log.jsonl", "a") as fh:
        fh.write(note)
    before = folder_snapshot(out)
    capsys.readouterr()
    hint = f"log.jsonl line {lines + 1} is not one of semmae's records; if you added it, delete that line"
    assert main([*argv, "--overwrite"]) == 2
    one_error_line(capsys, "log.jsonl", hint)
    assert main([*argv, "--resume", "auto"]) == 2
    one_error_line(capsys, "log.jsonl, which is not what the run wrote there", hint)
    assert folder_snapshot(out) == before
    # the way out the message names: the line deleted, the run continues with its log
    kept = (out / "log.jsonl").read_bytes().splitlines()[:lines]
    (out / "log.jsonl").write_bytes(b"".join(line + b"\n" for line in kept))
    assert main([*argv, "--resume", "auto"]) == 0


def test_a_run_killed_before_its_marker_is_not_taken_for_a_run_from_before_markers(
    images, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    argv = _pretrain(images, out)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ownership, "write_owner", killed)
    assert main(argv) != 0  # interrupted (as by a kill) just before its marker was written
    monkeypatch.undo()
    assert not (out / OWNER_NAME).exists()
    (out / "config.yaml").write_text("mine\n")
    capsys.readouterr()
    assert main([*argv, "--resume", "auto"]) == 2
    one_error_line(capsys, "holds no `semmae pretrain` run")
    assert (out / "config.yaml").read_text() == "mine\n"


def test_overwrite_after_a_kill_mid_write_sweeps_the_runs_own_temporary(images, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = _pretrain(images, out)
    assert main(argv) == 0
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False)
        io.note_written(out / "checkpoints" / "ckpt-000000009.pth")  # named, then killed mid-write:
    (out / "checkpoints" / ".ckpt-000000009.pth.a1b2c3d4.tmp").write_bytes(b"half")
    (out / "checkpoints" / ".draft.tmp").write_bytes(b"mine")
    with pytest.raises(UserError, match=r"\.draft\.tmp"):  # a temporary of yours is never taken for semmae's
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    os.rename(out / "checkpoints" / ".draft.tmp", tmp_path / ".draft.tmp")
    assert main([*argv, "--overwrite"]) == 0
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_a_second_export_sweeps_what_a_killed_one_left(images, tmp_path):
    run = tmp_path / "run"
    assert main(_pretrain(images, run)) == 0
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    (out / ".model.safetensors.k1l2m3n4.tmp").write_bytes(b"half the weights")
    (out / ".draft.tmp").write_bytes(b"mine")
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--overwrite"]) == 0
    assert not (out / ".model.safetensors.k1l2m3n4.tmp").exists()
    assert (out / ".draft.tmp").read_bytes() == b"mine"


def test_an_event_file_a_kill_left_unrecorded_is_known_by_the_token_recorded_before_it(tmp_path):
    from semmae.utils.rundir import note_event_token

    out = tmp_path / "run"
    stamp = f"{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
        run.note("tb")
        note_event_token(
            out / "tb", "0123456789abcdef"
        )  # recorded, then the writer made its file and was killed
        (out / "tb").mkdir()
        ours = f"events.out.tfevents.{stamp}.0.0123456789abcdef"
        (out / "tb" / ours).write_bytes(b"\x18\x00 header")
    # a file named like a writer of this very process (its host and pid), but without the recorded token
    theirs = f"events.out.tfevents.{stamp}.1"
    (out / "tb" / theirs).write_bytes(b"another writer's")
    with pytest.raises(UserError, match=rf"holds tb/{theirs}, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    os.rename(out / "tb" / theirs, tmp_path / theirs)
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert not (out / "tb").exists() and (tmp_path / theirs).read_bytes() == b"another writer's"


def test_every_event_file_of_a_run_carries_a_token_its_marker_recorded(images, tmp_path):
    out = tmp_path / "run"
    assert main(_pretrain(images, out)) == 0
    assert main([*_pretrain(images, out), "--resume", "auto"]) == 0  # a second writer, a second token
    owner = read_owner(out)
    found = ownership.event_file_tokens(out, owner)
    events = sorted(f"tb/{n}" for n in os.listdir(out / "tb"))
    assert len(events) == 2 and sorted(found) == events
    assert sorted(set(found.values())) == sorted(r.split("/")[1] for r in owner.events)


# -- a fifth hostile round -------------------------------------------------------------------------------------------
def test_a_temporary_named_file_of_yours_makes_a_folder_not_empty(images, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.yaml.abcd1234.tmp").write_text("my draft\n")  # named like semmae's temporaries
    capsys.readouterr()
    assert main(_pretrain(images, out)) == 2
    one_error_line(capsys, ".config.yaml.abcd1234.tmp")
    assert (out / ".config.yaml.abcd1234.tmp").read_text() == "my draft\n"


def test_a_continued_run_never_appends_through_a_hard_link_to_a_snapshot(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False).log(1, loss=1.0)
    snapshot = tmp_path / "snapshot.jsonl"
    os.link(out / "log.jsonl", snapshot)  # `cp -al` of the run (an rsync --link-dest backup)
    kept = snapshot.read_bytes()
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False).log(2, loss=0.5)
    assert snapshot.read_bytes() == kept
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_standalone_synth_never_takes_your_images_for_an_interrupted_synths(tmp_path, capsys):
    out = tmp_path / "photos"
    (out / "train" / "bird").mkdir(parents=True)
    (out / "train" / "bird" / "bird_00001.png").write_bytes(b"my bird photo")
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(out), "--num-images", "12", "--size", "16"]) == 2
    one_error_line(capsys, "bird_00001.png", "which data synth did not write")
    assert folder_snapshot(out) == before


def test_an_export_into_a_folder_holding_only_temporary_named_files_of_yours_is_refused(
    images, tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(_pretrain(images, run)) == 0
    out = tmp_path / "export"
    out.mkdir()
    (out / ".model.safetensors.abcd1234.tmp").write_bytes(b"my half-downloaded weights")
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    one_error_line(capsys, ".model.safetensors.abcd1234.tmp")
    assert folder_snapshot(out) == before
