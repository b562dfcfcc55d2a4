"""A single-file output is checked by the ownership rule before the work, and again when it is put in place: a
file you put at that name while semmae worked (scoring a cache, exporting weights) is never replaced."""

from __future__ import annotations

import json
import os

import pytest
from _helpers import one_error_line

from semmae.cli import main
from semmae.errors import UserError
from semmae.utils.io import atomic_write_text
from semmae.utils.ownership import check_output_file


def _checked(tmp_path, before):
    """An output path, holding nothing or an earlier output of semmae's, that the ownership rule allowed."""
    out = tmp_path / "metrics.json"
    if before == "semmae's file":
        out.write_text("semmae's old output\n")
    check_output_file(out, overwrite=True, inputs={}, written_by_semmae=lambda p: True)
    return out


@pytest.mark.parametrize("before", ["nothing", "semmae's file"])
def test_a_file_put_there_after_the_check_is_never_replaced(tmp_path, before):
    out = _checked(tmp_path, before)
    out.unlink(missing_ok=True)
    out.write_text("mine, put there while semmae worked\n")
    with pytest.raises(UserError, match=r"metrics.json changed while semmae was writing it"):
        atomic_write_text(out, "semmae's new output\n")
    assert out.read_text() == "mine, put there while semmae worked\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


@pytest.mark.parametrize("before", ["nothing", "semmae's file"])
def test_an_unchanged_target_is_written(tmp_path, before):
    out = _checked(tmp_path, before)
    atomic_write_text(out, "semmae's new output\n")
    assert out.read_text() == "semmae's new output\n"
    atomic_write_text(out, "written again, no check expected\n")  # the expectation is used once
    assert out.read_text() == "written again, no check expected\n"


def test_compare_never_writes_over_a_table_that_appeared_while_it_worked(tmp_path, capsys, monkeypatch):
    import semmae.eval.compare as compare

    run = tmp_path / "mae-seed0"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"top1": 50.0, "top5": 90.0}))
    out = tmp_path / "table.json"
    real = compare.to_json

    def slow(rows):  # the user saves a file there while compare builds its table
        out.write_text("my table\n")
        return real(rows)

    monkeypatch.setattr(compare, "to_json", slow)
    assert main(["compare", str(run), "--json", str(out)]) == 2
    one_error_line(capsys, "table.json changed while semmae was writing it")
    assert out.read_text() == "my table\n"


def test_a_write_killed_between_its_link_and_its_unlink_leaves_nothing_behind_for_long(tmp_path):
    out = tmp_path / "metrics.json"
    out.write_text("semmae's old output\n")
    leftover = tmp_path / ".metrics.json.a1b2c3d4.tmp"
    os.link(out, leftover)  # the temporary's other name, left by a kill after the link
    mine = tmp_path / ".metrics.json.notes.tmp"
    mine.write_text("a file of yours named like one\n")
    _checked(tmp_path, "semmae's file")
    assert not leftover.exists() and mine.read_text() == "a file of yours named like one\n"
    assert out.read_text() == "semmae's old output\n"
