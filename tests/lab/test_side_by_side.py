"""Stages run side by side in spawned processes from typed configs: both finish, their output goes to their own
logs, one thread each; a failing one is named with its log."""

from __future__ import annotations

import dataclasses

import pytest

from semmae.cli import stage_config
from semmae.errors import UserError
from semmae_lab.side_by_side import run_side_by_side


def test_two_stages_run_at_once_and_a_failure_names_its_log(tmp_path):
    jobs = {
        name: (
            "data synth",
            stage_config(
                "data synth", out=str(tmp_path / name), num_images=10, size=16, seed=seed, progress=False
            ),
            tmp_path / "logs" / f"{name}.log",
        )
        for seed, name in enumerate(("a", "b"))
    }
    seconds = run_side_by_side(jobs)
    assert set(seconds) == {"a", "b"} and all(s > 0 for s in seconds.values())
    assert (tmp_path / "a" / "synth.json").is_file() and (tmp_path / "b" / "synth.json").is_file()
    bad = stage_config("data synth", out=str(tmp_path / "c"), num_images=10, size=16, progress=False)
    bad = dataclasses.replace(bad, num_images=4)  # refused by the stage's own check, in the child
    with pytest.raises(UserError, match=r"c failed .*c\.log"):
        run_side_by_side({"c": ("data synth", bad, tmp_path / "logs" / "c.log")})
    assert "--num-images must be at least 10" in (tmp_path / "logs" / "c.log").read_text()
