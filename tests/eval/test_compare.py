"""``semmae compare``: rows by the seed rule, exact means and sample stds, markdown / JSON / CSV, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from _helpers import folder_snapshot, live_run, one_error_line, user_folder

from semmae.cli import main
from semmae.errors import UserError
from semmae.eval.compare import compare, markdown, read_rows, seed_group, to_csv


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
    assert mae["metrics"]["top5"] == {"mean": 92.0, "std": 2.0, "values": [90.0, 92.0, 94.0], "non_finite": 0}
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
    doc = json.loads(out_json.read_text())
    assert doc["written_by"] == "semmae compare" and doc["format"] == 1 and read_rows(out_json) == doc["rows"]
    rows = doc["rows"]
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


# -- what --json / --csv may replace (semmae.utils.ownership.check_output_file) -------------------------------------
def _strict(text: str):
    """``text`` parsed as strict JSON (NaN / Infinity refused)."""

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("flag", ["--json", "--csv"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_runs_own_results_are_never_the_output(runs, capsys, flag, overwrite):
    before = folder_snapshot(runs)
    argv = ["compare", str(runs / "mae-seed0"), str(runs / "mae-seed1"), flag]
    argv += [str(runs / "mae-seed1" / "results.json"), *(["--overwrite"] if overwrite else [])]
    assert main(argv) == 2
    one_error_line(capsys, flag, "lies inside run folder", "mae-seed1", "never replaces its inputs")
    assert folder_snapshot(runs) == before  # results.json byte-identical, nothing else written
    # the run folder itself, or a new file inside it, is refused as well
    assert main(["compare", str(runs / "seg"), flag, str(runs / "seg"), "--overwrite"]) == 2
    one_error_line(capsys, flag, str(runs / "seg"))
    assert main(["compare", str(runs / "seg"), flag, str(runs / "seg" / "table.out")]) == 2
    one_error_line(capsys, "lies inside run folder")
    assert folder_snapshot(runs) == before


def test_a_live_runs_log_and_any_semmae_folder_are_refused(runs, tmp_path, capsys):
    from semmae.utils.ownership import Owner, write_owner

    with live_run(tmp_path / "live") as live:
        before = folder_snapshot(live)
        argv = ["compare", str(runs / "seg"), "--json", str(live / "log.jsonl"), "--overwrite"]
        assert main(argv) == 2
        one_error_line(capsys, "--json", "log.jsonl", "still going")
        assert main(["compare", str(runs / "seg"), "--csv", str(live / "table.csv")]) == 2
        one_error_line(capsys, "--csv", "still going")
        assert folder_snapshot(live) == before
    # a finished folder semmae owns (not given on the command line) is not a place for compare's files either
    done = tmp_path / "done"
    done.mkdir()
    (done / "results.json").write_text('{"top1": 1.0}')
    write_owner(done, Owner(kind="run", verb="knn", entries=["results.json"]))
    before = folder_snapshot(done)
    for target in ("results.json", "table.json"):
        argv = ["compare", str(runs / "seg"), "--json", str(done / target), "--overwrite"]
        assert main(argv) == 2
        one_error_line(capsys, "--json", "a folder semmae owns")
    assert folder_snapshot(done) == before


@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_a_users_file_is_never_replaced(runs, tmp_path, capsys, flag):
    home = user_folder(tmp_path / "home")
    (home / "rows.json").write_text('{"written_by": "me", "rows": []}\n')  # JSON, but not compare's
    (home / "rows.csv").write_text("run,kind,n\nmine,x,1\n")  # a CSV, but not compare's header
    before = folder_snapshot(home)
    for name in ("thesis.txt", "rows.json", "rows.csv"):
        argv = ["compare", str(runs / "seg"), flag, str(home / name)]
        assert main(argv) == 2
        one_error_line(capsys, flag, name, "already exists; pass --overwrite")
        assert main([*argv, "--overwrite"]) == 2
        one_error_line(capsys, flag, name, "semmae did not write it")
    assert main(["compare", str(runs / "seg"), flag, str(home / "photos")]) == 2
    one_error_line(capsys, "is a folder")
    assert folder_snapshot(home) == before


def test_both_outputs_are_checked_before_either_is_written(runs, tmp_path, capsys):
    home = user_folder(tmp_path / "home")
    out = tmp_path / "out"
    argv = ["compare", str(runs / "seg"), "--json", str(out / "new.json"), "--csv", str(home / "files.txt")]
    assert main([*argv, "--overwrite"]) == 2
    one_error_line(capsys, "--csv", "files.txt")
    assert not out.exists() and (home / "files.txt").read_text() == "my list\n"
    assert main(["compare", str(runs / "seg"), "--json", str(out / "t"), "--csv", str(out / "t")]) == 2
    one_error_line(capsys, "name the same file")
    assert not out.exists()


def test_compares_own_files_are_replaced_with_overwrite_only(runs, tmp_path, capsys):
    out_json, out_csv = tmp_path / "table.json", tmp_path / "table.csv"
    first = ["compare", str(runs / "seg"), "--json", str(out_json), "--csv", str(out_csv)]
    assert main(first) == 0
    old_json, old_csv = out_json.read_bytes(), out_csv.read_bytes()
    capsys.readouterr()
    second = ["compare", str(runs / "mae-seed0"), "--json", str(out_json), "--csv", str(out_csv)]
    assert main(second) == 2  # no --overwrite: even compare's own file stays
    one_error_line(capsys, "--json", "already exists")
    assert out_json.read_bytes() == old_json and out_csv.read_bytes() == old_csv
    assert main([*second, "--overwrite"]) == 0
    assert [r["run"] for r in read_rows(out_json)] == ["mae"]
    assert out_csv.read_text().startswith("run,kind,n,seeds,top1_mean")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["table.csv", "table.json"]  # no temp


# -- odd numbers and unreadable files ---------------------------------------------------------------------------------
def test_nan_and_inf_are_shown_and_left_out_of_mean_and_std(tmp_path, capsys):
    run(tmp_path, "mae-seed0", {"top1": 50.0, "top5": 90.0})
    (run(tmp_path, "mae-seed1") / "results.json").write_text('{"top1": NaN, "top5": 92.0}')
    (run(tmp_path, "mae-seed2") / "results.json").write_text('{"top1": 54.0, "top5": 1e400}')
    (run(tmp_path, "pre") / "log.jsonl").write_text('{"step": 1, "knn_top1": NaN, "knn_top5": Infinity}\n')
    paths = [tmp_path / n for n in ("mae-seed0", "mae-seed1", "mae-seed2", "pre")]
    out_json, out_csv = tmp_path / "t.json", tmp_path / "t.csv"
    argv = ["compare", *map(str, paths), "--json", str(out_json), "--csv", str(out_csv)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert (
        "| mae | knn | 3 | 52.00 ± 2.83 | 91.00 ± 1.41 |  |  | top-1 non-finite in 1 of 3 (nan), not averaged; "
        in table
    )
    assert "top-5 non-finite in 1 of 3 (inf), not averaged |" in table
    assert "| pre | online-knn | 1 |  |  | nan | inf | kNN top-1 non-finite in 1 of 1 (nan)" in table
    mae, pre = _strict(out_json.read_text())["rows"]
    assert mae["metrics"]["top1"] == {
        "mean": 52.0,
        "std": math.sqrt(8),
        "values": [50.0, None, 54.0],
        "non_finite": 1,
    }
    assert pre["metrics"]["knn_top1"] == {"mean": None, "std": None, "values": [None], "non_finite": 1}
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert float(rows[0]["top1_mean"]) == 52.0 and rows[1]["knn_top1_mean"] == ""


@pytest.mark.parametrize("where", ["results.json", "log.jsonl"])
def test_an_integer_too_large_for_a_float_is_one_line(tmp_path, capsys, where):
    d = run(tmp_path, "big")
    huge = "1" + "0" * 399
    text = f'{{"top1": {huge}}}' if where == "results.json" else f'{{"step": 1, "knn_top1": {huge}}}\n'
    (d / where).write_text(text)
    assert main(["compare", str(d)]) == 2
    one_error_line(capsys, str(d / where), "top1", "400 digits", "too large")


@pytest.mark.parametrize("where", ["results.json", "log.jsonl"])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys, where):
    d = run(tmp_path, "bad")
    record = (
        b'{"top1": 1.0, "note": "\xff"}'
        if where == "results.json"
        else b'{"step": 1, "knn_top1": 1.0, "x": "\xfe"}\n'
    )
    (d / where).write_bytes(record)
    assert main(["compare", str(d)]) == 2
    one_error_line(capsys, str(d / where), "is not UTF-8")


def test_compare_writes_without_importing_torch(runs, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom semmae.eval.compare import CompareConfig, run_compare\n"
        f"run_compare(CompareConfig(runs=[{str(runs / 'seg')!r}], json={str(tmp_path / 'o.json')!r}))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
    assert read_rows(tmp_path / "o.json")[0]["run"] == "seg"
