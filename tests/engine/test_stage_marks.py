"""What the library's chained stages (the demo; the lab's harness and campaigns) share: a stage's done-file
(:mod:`semmae.engine.stage_marks`) and the checkpoint a finished run hands on (:mod:`semmae.engine.run_checkpoints`,
:func:`semmae.parts.checkpoint.part_checkpoint`)."""

from __future__ import annotations

import json

import pytest

from semmae.engine.run_checkpoints import latest_checkpoint
from semmae.engine.stage_marks import StageMarks
from semmae.errors import UserError
from semmae.parts.checkpoint import part_checkpoint


def test_a_stage_runs_once_and_its_result_is_read_back(tmp_path):
    marks, calls = StageMarks(tmp_path), []
    fn = lambda: calls.append(1) or {"cache": "x.cache"}  # noqa: E731
    first, _ = marks.once("parts", fn, log=lambda _: None)
    again, seconds = marks.once("parts", fn, log=lambda _: None)
    assert first == again == {"cache": "x.cache"} and calls == [1] and seconds >= 0.0
    # the harness's done-file layout: <folder>/stages/<name>.json = {"seconds", "result"}
    assert set(json.loads((tmp_path / "stages" / "parts.json").read_text())) == {"seconds", "result"}
    (tmp_path / "stages" / "broken.json").write_text("{not json")
    marks.write("quality", {"result": 1})  # a record without seconds (a campaign's part quality)
    assert marks.read("broken") is None and set(marks.records()) == {"parts", "quality"}
    assert list(marks.seconds()) == ["parts"]


def test_latest_checkpoint_reads_the_run_folder_like_every_loader(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for step in (4, 8):
        (ckpts / f"ckpt-{step:09d}.pth").write_bytes(b"x")
    (ckpts / "latest").write_text("ckpt-000000004.pth")  # the pointer wins over the newest file
    assert latest_checkpoint(tmp_path / "run") == ckpts / "ckpt-000000004.pth"
    with pytest.raises(UserError, match="does not exist"):
        latest_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="without a checkpoint"):
        latest_checkpoint(tmp_path / "empty")
    with pytest.raises(UserError, match="part learning wrote no checkpoint"):
        part_checkpoint(tmp_path / "empty")


def test_a_record_under_a_former_name_counts(tmp_path):
    marks = StageMarks(tmp_path)
    marks.write("bootstrap", {"seconds": 3.0, "result": "enc.pth"})  # a folder from before the rename
    ran = []
    result, seconds = marks.once(
        "part_encoder", lambda: ran.append(1), log=lambda _: None, was=("bootstrap",)
    )
    assert (result, seconds, ran) == ("enc.pth", 3.0, []) and marks.read("part_encoder") is None
    assert marks.read_any("part_encoder", ("bootstrap",)) == {"seconds": 3.0, "result": "enc.pth"}
    assert marks.read_any("part_encoder") is None
    marks.write("part_encoder", {"seconds": 1.0, "result": "new.pth"})  # the new name wins
    assert (
        marks.once("part_encoder", lambda: ran.append(1), log=lambda _: None, was=("bootstrap",))[0]
        == "new.pth"
    )
