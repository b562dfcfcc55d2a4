"""``semmae compare``: rows by the seed rule, exact means and sample stds, markdown / JSON / CSV, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from semmae.cli import main
from semmae.errors import UserError
from semmae.eval.compare import compare, markdown, seed_group, to_csv


def run(root: Path, name: str, results: dict | None = None, log: list[dict] | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if results is not None:
        (d / "results.json").write_text(json.dumps(results))
    if log is not None:
        (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return d


@pytest.fixture
def runs(tmp_path):
    """Three linprobe seeds of mae (top-1 50/54/58, top-5 90/92/94), one semmae seed, a segmentation run and a
    pretraining run with online kNN."""
    for seed, (t1, t5) in enumerate([(50.0, 90.0), (54.0, 92.0), (58.0, 94.0)]):
        edge = "top" if seed == 0 else None
        run(tmp_path, f"mae-seed{seed}", {"top1": t1, "top5": t5, "best_blr": 0.4, "best_on_edge": edge})
    run(tmp_path, "semmae_seed0", {"top1": 61.5, "top5": 95.0, "best_blr": 0.1, "best_on_edge": None})
    run(tmp_path, "seg", {"miou": 30.25, "macc": 40.0, "aacc": 70.0, "units": "percent"})
    log = [
        {"step": 10, "loss": 1.0},
        {"step": 20, "knn_top1": 11.0},
        {"step": 30, "knn_top1": 12.5, "knn_top5": 40},
    ]
    run(tmp_path, "pre", log=log)
    return tmp_path


def test_seed_groups_exact_mean_and_sample_std(runs):
    rows = compare([runs / n for n in ("mae-seed0", "mae-seed1", "mae-seed2", "semmae_seed0", "seg", "pre")])
    by = {r["run"]: r for r in rows}
    assert list(by) == ["mae", "semmae", "seg", "pre"]
    mae = by["mae"]
    assert mae["kind"] == "linprobe" and mae["n"] == 3 and mae["seeds"] == [0, 1, 2]
    assert (
        mae["metrics"]["top1"]["mean"] == 54.0 and mae["metrics"]["top1"]["std"] == 4.0
    )  # sample std (n - 1)
    assert mae["metrics"]["top5"] == {"mean": 92.0, "std": 2.0, "values": [90.0, 92.0, 94.0]}
    assert mae["best_on_edge"] == ["top"]
    assert by["semmae"]["n"] == 1 and by["semmae"]["metrics"]["top1"]["std"] is None
    assert by["seg"]["kind"] == "segment" and by["seg"]["metrics"]["miou"]["mean"] == 30.25
    assert (
        by["pre"]["kind"] == "online-knn" and by["pre"]["metrics"]["knn_top1"]["mean"] == 12.5
    )  # the last record
    table = markdown(rows, digits=2)
    assert "| mae | linprobe | 3 | 54.00 ± 4.00 | 92.00 ± 2.00 |" in table
    assert "best blr on the sweep's top edge (1 of 3)" in table
    assert "| semmae | linprobe | 1 | 61.50 | 95.00 |" in table


def test_seed_rule_reads_parents_and_bare_seed_folders():
    assert seed_group(Path("/r/mae-seed3/knn")) == (("/", "r", "mae", "knn"), 3, 2)
    assert seed_group(Path("/r/mae/seed12")) == (("/", "r", "mae"), 12, 2)
    assert seed_group(Path("/r/mae_seed0")) == (("/", "r", "mae"), 0, 2)
    assert seed_group(Path("/r/maeseed0")) == (("/", "r", "maeseed0"), None, 2)  # no separator: not a seed
    assert seed_group(Path("/r/seedling")) == (("/", "r", "seedling"), None, 2)


def test_nested_rows_and_duplicates(tmp_path):
    for seed, top1 in enumerate([70.0, 72.0]):
        run(tmp_path, f"mae-seed{seed}/knn", {"top1": top1, "top5": 99.0})
    paths = [tmp_path / "mae-seed0/knn", tmp_path / "mae-seed1/knn", tmp_path / "mae-seed1/knn"]
    (row,) = compare(paths)
    assert row["run"] == "mae/knn" and row["n"] == 2 and row["kind"] == "knn"
    assert row["metrics"]["top1"]["mean"] == 71.0 and math.isclose(
        row["metrics"]["top1"]["std"], math.sqrt(2)
    )


def test_json_and_csv_files(runs, tmp_path, capsys):
    out_json, out_csv = tmp_path / "t" / "rows.json", tmp_path / "t" / "rows.csv"
    argv = ["compare", str(runs / "mae-seed0"), str(runs / "mae-seed1"), str(runs / "seg")]
    assert main([*argv, "--json", str(out_json), "--csv", str(out_csv), "--digits", "1"]) == 0
    assert "| mae | linprobe | 2 | 52.0 ± 2.8 | 91.0 ± 1.4 |" in capsys.readouterr().out
    rows = json.loads(out_json.read_text())
    assert rows[0]["metrics"]["top1"]["mean"] == 52.0 and rows[1]["run"] == "seg"
    table = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert table[0]["run"] == "mae" and table[0]["seeds"] == "0 1" and float(table[0]["top1_mean"]) == 52.0
    assert math.isclose(float(table[0]["top1_std"]), math.sqrt(8)) and table[1]["top1_mean"] == ""
    assert to_csv(compare([runs / "seg"])).splitlines()[0].startswith("run,kind,n,seeds,miou_mean,miou_std")


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", r"has no results: no results.json .* is the run finished\?"),
        ("parent", r"it holds run folders \(mae-seed0, mae-seed1, mae-seed2, \.\.\.\): pass those"),
        ("missing", "does not exist"),
        ("bad_json", "is not valid JSON"),
        ("no_metrics", "holds none of top1"),
        ("mixed", r"runs of row mae were written by different verbs \(knn, linprobe\)"),
        ("same_seed", r"row mae has two runs of seed 1: .*mae-seed1 and .*mae_seed1"),
    ],
)
def test_errors(runs, case, message):
    paths = {
        "empty": [run(runs, "empty")],
        "parent": [runs],
        "missing": [runs / "nope"],
        "bad_json": [run(runs, "bad")],
        "no_metrics": [run(runs, "odd", {"loss": 1.0})],
        "mixed": [runs / "mae-seed0", run(runs, "mae-seed7", {"top1": 1.0})],
        "same_seed": [runs / "mae-seed1", run(runs, "mae_seed1", {"top1": 1.0, "best_blr": 0.1})],
    }[case]
    if case == "bad_json":
        (paths[0] / "results.json").write_text("{")
    with pytest.raises(UserError, match=message):
        compare(paths)


def test_cli_error_is_one_line(runs, capsys):
    assert main(["compare", str(runs / "mae-seed0"), str(run(runs, "empty"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("semmae compare: error: ") and err.count("\n") == 1
    assert main(["compare"]) == 2
