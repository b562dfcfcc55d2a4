"""What the library's chained stages (the demo; the lab's harness and campaigns) share: the one stage runner and its
done-files (:mod:`semmae.engine.stage_runner`) and the checkpoint a finished run hands on
(:mod:`semmae.engine.run_checkpoints`, :func:`semmae.parts.checkpoint.part_checkpoint`)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from semmae.engine.run_checkpoints import latest_checkpoint
from semmae.engine.stage_runner import Stage, StageRunner
from semmae.errors import UserError
from semmae.parts.checkpoint import part_checkpoint


def quiet(folder, label: str = "") -> tuple[StageRunner, list[str]]:
    lines: list[str] = []
    return StageRunner(folder, lines.append, label), lines


def test_a_stage_runs_once_and_its_result_is_read_back(tmp_path):
    calls = []
    stage = Stage("parts", lambda: calls.append(1) or {"cache": "x.cache"})
    runner, lines = quiet(tmp_path)
    first = runner.run(stage)
    again, _ = quiet(tmp_path)
    assert first == again.run(stage) == {"cache": "x.cache"} and calls == [1]
    assert runner.seconds["parts"] == again.seconds["parts"] >= 0.0
    assert lines == ["stage parts ...", "stage parts - done in 0 s"]
    # the harness's done-file layout: <folder>/stages/<name>.json = {"seconds", "result"}
    assert set(json.loads((tmp_path / "stages" / "parts.json").read_text())) == {"seconds", "result"}
    (tmp_path / "stages" / "broken.json").write_text("{not json")
    # a record without seconds (a campaign's part quality, written before the runner)
    runner.marks.write("quality", {"result": 1})
    assert runner.marks.read("broken") is None and set(runner.marks.records()) == {"parts", "quality"}
    assert list(runner.marks.seconds()) == ["parts"]
    assert quiet(tmp_path)[0].run(Stage("quality", lambda: 2)) == 1  # it counts: it holds a result


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
    runner, _ = quiet(tmp_path)
    runner.marks.write("bootstrap", {"seconds": 3.0, "result": "enc.pth"})  # a folder from before the rename
    ran = []
    stage = Stage("part_encoder", lambda: ran.append(1), was=("bootstrap",))
    assert (runner.run(stage), runner.seconds, ran) == ("enc.pth", {"part_encoder": 3.0}, [])
    assert runner.marks.read("part_encoder") is None  # read, never rewritten
    runner.marks.write("part_encoder", {"seconds": 1.0, "result": "new.pth"})  # the new name wins
    assert runner.run(stage) == "new.pth"
    assert quiet(tmp_path)[0].run(Stage("part_encoder", lambda: "fresh")) == "new.pth"


def test_a_list_of_artifact_stages_checks_its_files_and_reruns_a_damaged_one(tmp_path):
    """The demo's chain: done-files ``{"stage", "seconds", "artifacts"}``; a rerun skips a stage whose files verify,
    redoes one whose file is missing or does not decode, and always redoes an ``always`` stage."""
    figure, table = tmp_path / "fig.png", tmp_path / "table.json"
    runs: list[str] = []

    def draw() -> list:
        runs.append("draw")
        Image.new("RGB", (4, 4)).save(figure)
        return [figure]

    def tabulate() -> list:
        runs.append("tabulate")
        table.write_text("{}")
        return [table]

    stages = [
        Stage("draw", draw, "draw a figure", artifacts=True),
        Stage("tabulate", tabulate, "a table", artifacts=True),
        Stage("report", lambda: runs.append("report") or [], "the report", always=True, artifacts=True),
    ]
    runner, lines = quiet(tmp_path, "demo")
    runner.run_all(stages)
    assert runs == ["draw", "tabulate", "report"] and list(runner.seconds) == ["draw", "tabulate", "report"]
    assert lines[0] == "[demo 1/3] draw: draw a figure ..."
    assert lines[-1].startswith("[demo 3/3] report: the report - done in")
    record = json.loads((tmp_path / "stages" / "draw.json").read_text())
    assert list(record) == ["stage", "seconds", "artifacts"] and record["artifacts"] == [str(figure)]
    figure.write_bytes(b"not a png")
    runner, lines = quiet(tmp_path, "demo")
    assert runner.run_all(stages)["tabulate"] == [table]  # read back as paths
    assert runs[3:] == ["draw", "report"]
    assert any(line.startswith(f"[demo] stage draw: artifact {figure} does not decode") for line in lines)
    assert "[demo 2/3] tabulate: a table - done already, skipped" in lines


def test_a_failing_stage_is_named(tmp_path):
    runner, _ = quiet(tmp_path)

    def bad_input():
        raise UserError("enc.pth is not a checkpoint")

    with pytest.raises(UserError, match=r"^stage 'parts' failed: enc.pth is not a checkpoint$"):
        runner.run(Stage("parts", bad_input))
    with pytest.raises(RuntimeError, match=r"^stage 'cache' failed: ZeroDivisionError") as info:
        runner.run(Stage("cache", lambda: 1 / 0))
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # the traceback's cause stays
    assert runner.marks.records() == {}  # nothing recorded for a stage that failed
