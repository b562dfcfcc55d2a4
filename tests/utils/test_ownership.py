"""The one ownership rule (issue 37): a folder is semmae's only if semmae created it (its owner marker), and
``--overwrite`` deletes only what the marker lists, never an input, never a user's file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest
from _helpers import as_older_marker, folder_snapshot, user_folder

from semmae.errors import UserError
from semmae.utils import ownership
from semmae.utils.ownership import OWNER_NAME, MarkerError, Owner, read_owner, safe_child, write_owner
from semmae.utils.run_lock import LOCK_NAME
from semmae.utils.rundir import claim_run_dir


@dataclass
class _Seed:
    seed: int = 0


def _project(root):
    """An ML project folder: a config.yaml and a log.jsonl of its own (what "is a run" used to mean), code, a thesis."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "model.py").write_text("import torch\n")
    (root / "config.yaml").write_text("lr: 0.1\n")
    (root / "log.jsonl").write_text('{"step": 1}\n')
    (root / "thesis.tex").write_text("\\chapter{Four years}\n")
    return root


def test_overwrite_keeps_every_file_of_a_project_folder_with_a_config_yaml(tmp_path):
    proj = _project(tmp_path / "proj")
    before = folder_snapshot(proj)
    for verb in ("pretrain", "linprobe", "demo"):
        with pytest.raises(
            UserError, match=r"was not created by `semmae .*` \(it has no .semmae-owner.json\)"
        ):
            claim_run_dir(proj, verb, resume=False, overwrite=True)
        with pytest.raises(UserError, match="holds no `semmae"):
            claim_run_dir(proj, verb, resume=True, overwrite=False)
        assert folder_snapshot(proj) == before


def test_a_run_records_what_it_wrote_and_overwrite_deletes_exactly_that(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        logger = run.start(_Seed(), tensorboard=False)
        logger.log(1, loss=1.0)
        (out / "checkpoints").mkdir()
        from semmae.utils.io import atomic_write_bytes

        atomic_write_bytes(out / "checkpoints" / "ckpt-000000001.pth", b"w")
        atomic_write_bytes(out / "results.json", b"{}")
    owner = read_owner(out)
    assert owner.kind == "run" and owner.verb == "pretrain" and len(owner.id) == 16
    assert owner.entries == ["checkpoints", "config.yaml", "log.jsonl", "results.json"]
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert sorted(os.listdir(out)) == sorted([OWNER_NAME, LOCK_NAME])
    assert read_owner(out).id != owner.id


def test_overwrite_refuses_a_run_folder_holding_a_users_file_and_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    with claim_run_dir(out, "knn", resume=False, overwrite=False) as run:
        run.start(_Seed(), tensorboard=False).log(0, top1=1.0)
    (out / "notes.txt").write_text("what I saw\n")
    before = folder_snapshot(out)
    with pytest.raises(UserError, match=r"holds notes.txt, which the run did not write"):
        claim_run_dir(out, "knn", resume=False, overwrite=True)
    assert folder_snapshot(out) == before


def test_overwrite_never_deletes_the_data_it_reads(tmp_path):
    proj = tmp_path / "proj3"
    with claim_run_dir(proj, "pretrain", resume=False, overwrite=False) as run:
        run.start(_Seed(), tensorboard=False).log(1, loss=1.0)
    (proj / "data" / "train" / "a").mkdir(parents=True)  # a dataset put inside the run folder afterwards
    (proj / "data" / "train" / "a" / "x.png").write_bytes(b"png")
    owner = read_owner(proj)
    owner.entries.append("data")  # even if the marker claimed it
    write_owner(proj, owner)
    before = folder_snapshot(proj)
    with pytest.raises(UserError, match=r"--out .*proj3 holds --data .*train, which this command reads"):
        claim_run_dir(
            proj, "pretrain", resume=False, overwrite=True, inputs={"--data": str(proj / "data" / "train")}
        )
    assert folder_snapshot(proj) == before


@pytest.mark.parametrize("name", ["/abs/elsewhere", "..", "../sibling", "a/b", ".", "", 7])
def test_a_planted_marker_cannot_name_a_path_outside_its_folder(tmp_path, name):
    victim = tmp_path / "sibling"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("x: 1\n")
    (out / OWNER_NAME).write_text(
        json.dumps(
            {
                "kind": "run",
                "verb": "pretrain",
                "id": "0" * 16,
                "created": 0,
                "entries": ["config.yaml", name],
            }
        )
    )
    before = folder_snapshot(tmp_path)
    with pytest.raises(UserError, match="leaves it alone"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    with pytest.raises(MarkerError):
        read_owner(out)
    assert folder_snapshot(tmp_path) == before


def test_a_symlinked_entry_is_unlinked_never_followed(tmp_path):
    victim = user_folder(tmp_path / "home")
    before = folder_snapshot(victim)
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(tensorboard=False)
        (out / "figures").symlink_to(victim, target_is_directory=True)
        run.note("figures")
    assert "figures" in read_owner(out).entries
    # semmae writes no links into a run folder, so none has a recorded identity: the link is refused, not followed
    with pytest.raises(UserError, match="holds figures, which the run did not write"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert (out / "figures").is_symlink() and folder_snapshot(victim) == before
    # a marker from before identities (format 2) takes its entries at their word: the link goes, its target stays
    as_older_marker(out)
    with claim_run_dir(out, "pretrain", resume=False, overwrite=True) as run:
        run.start(tensorboard=False)
    assert not (out / "figures").exists() and folder_snapshot(victim) == before


def test_safe_child_refuses_a_name_through_a_symlinked_parent(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert safe_child(tmp_path / "real", "x") == tmp_path / "real" / "x"
    with pytest.raises(MarkerError, match="not a plain entry"):
        safe_child(tmp_path, "real/x")


def test_a_damaged_marker_leaves_the_folder_alone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "a.txt").write_text("a")
    (out / OWNER_NAME).write_bytes(b"\xff\xfe not json")
    before = folder_snapshot(out)
    for resume, overwrite in ((True, False), (False, True)):
        with pytest.raises(UserError, match="is damaged"):
            claim_run_dir(out, "pretrain", resume=resume, overwrite=overwrite)
    assert folder_snapshot(out) == before


def test_a_run_from_before_markers_resumes_and_is_adopted_but_not_overwritten(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 0\n")
    (out / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (out / LOCK_NAME).write_text(
        json.dumps({"pid": 1, "host": "h", "holder": "pretrain", "verb": "pretrain"})
    )
    before = folder_snapshot(out)
    with pytest.raises(UserError, match="written by a semmae without owner markers"):
        claim_run_dir(out, "pretrain", resume=False, overwrite=True)
    assert folder_snapshot(out) == before
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(tensorboard=False)
    assert read_owner(out).entries == ["config.yaml", "log.jsonl"]


@dataclass
class _Pre:
    data: str
    masking: str = "adaptive"
    gamma: float = 2.0
    num_workers: str = "2"
    crop_scale: tuple = field(default=(0.2, 1.0))


def test_a_continued_run_refuses_a_change_of_meaning_and_keeps_the_folder(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    out = tmp_path / "run"
    with claim_run_dir(out, "pretrain", resume=False, overwrite=False) as run:
        run.start(_Pre(str(data)), tensorboard=False).log(1, loss=1.0)
    before = folder_snapshot(out)
    for change in ({"masking": "random"}, {"gamma": 1.0}, {"crop_scale": (0.5, 1.0)}):
        with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
            key = next(iter(change))
            with pytest.raises(UserError, match=rf"other settings \(--{key.replace('_', '-')} "):
                run.start(_Pre(str(data), **change), keep_log_until=1, tensorboard=False)
        assert folder_snapshot(out) == before
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:  # how it runs may change
        run.start(_Pre(str(data), num_workers="0"), keep_log_until=1, tensorboard=False)
    config = (
        out / "config.yaml"
    )  # a run from before --gamma existed (and before file identities): the new field at its default is what it did
    config.write_text(
        "".join(ln + "\n" for ln in config.read_text().splitlines() if not ln.startswith("gamma"))
    )
    as_older_marker(out)
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        run.start(_Pre(str(data)), keep_log_until=1, tensorboard=False)
    config.write_text(
        "".join(ln + "\n" for ln in config.read_text().splitlines() if not ln.startswith("gamma"))
    )
    as_older_marker(out)
    with claim_run_dir(out, "pretrain", resume=True, overwrite=False) as run:
        with pytest.raises(UserError, match=r"--gamma None -> 3.0"):
            run.start(_Pre(str(data), gamma=3.0), keep_log_until=1, tensorboard=False)


def test_input_conflict_names_every_relation(tmp_path):
    d = tmp_path / "d"
    assert ownership.input_conflict(d, {"--data": str(d)}) == f"is --data {d}"
    assert ownership.input_conflict(tmp_path, {"--data": str(d)}).startswith("holds --data")
    assert ownership.input_conflict(d / "x", {"--data": str(d)}).startswith("lies inside --data")
    assert ownership.input_conflict(tmp_path / "e", {"--data": str(d), "--val": None}) is None


def test_a_single_file_output_is_replaced_only_when_semmae_wrote_it(tmp_path):
    mine = tmp_path / "table.json"
    mine.write_text("mine")
    ours = tmp_path / "ours.json"
    ours.write_text("ours")

    def check(p, overwrite):
        return ownership.check_output_file(
            p, overwrite=overwrite, inputs={}, written_by_semmae=lambda q: q.read_text() == "ours"
        )

    assert check(tmp_path / "new.json", False) == tmp_path / "new.json"
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        check(ours, False)
    assert check(ours, True) == ours
    with pytest.raises(UserError, match="semmae did not write it"):
        check(mine, True)
    with pytest.raises(UserError, match="is a folder"):
        check(tmp_path, True)
    run = tmp_path / "run"
    with claim_run_dir(run, "knn", resume=False, overwrite=False) as r:
        r.start(tensorboard=False)
    with pytest.raises(UserError, match="a folder semmae owns"):
        check(run / "results.json", True)
    assert Owner(kind="run", verb="knn").describes("run", "knn")
