"""benchmarks/repro.py on generated images (smoke preset, micro model): the Table 4 grid end to end, the summary's
rows and numbers, deduplication (one `random` run fills three tables), resume, subsets and --only checks."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from _helpers import write_image_folder

from semmae.data.subset import make_subset
from semmae.errors import UserError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_repro():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("repro", BENCH / "repro.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["repro"] = mod
    spec.loader.exec_module(mod)
    return mod


repro = _load_repro()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    data = root / "data"
    write_image_folder(data / "train", classes=("a", "b", "c"), per_class=8, size=32, seed=0)
    write_image_folder(data / "val", classes=("a", "b", "c"), per_class=4, size=32, seed=1)
    argv = ["--preset", "smoke", "--data", str(data), "--only", "table4", "--work", str(root / "work")]
    argv += ["--out", str(root / "out"), "--device", "cpu"]
    assert repro.main(argv) == 0
    return root, argv


def _stem(out: Path) -> str:
    (md,) = out.glob("*-smoke-*.md")
    return md.stem


def test_table4_grid_writes_runs_summary_chart_and_json(grid):
    root, _ = grid
    out = root / "out"
    stem = _stem(out)
    runs = sorted(p.stem for p in (out / stem / "per-run").glob("*.json"))
    # table 4 = no parts (the `random` run), learned parts (adaptive gamma 2), raw attention; + random init
    assert runs == ["adaptive_g2-seed0", "attention_g2-seed0", "random-seed0", "random_init-seed0"]
    for name in runs:
        rec = json.loads((out / stem / "per-run" / f"{name}.json").read_text())
        assert 0.0 <= rec["knn_top1"] <= 100.0 and 0.0 <= rec["linprobe_top1"] <= 100.0
        assert 0.0 <= rec["logreg_top1"] <= 100.0
        assert rec["num_train"] == 24 and rec["num_val"] == 12
    rec = json.loads((out / stem / "per-run" / "random-seed0.json").read_text())
    assert {tuple(r) for r in rec["rows"]} >= {("table3", "random"), ("table1", "MAE, patch P")}
    md = (out / f"{stem}.md").read_text()
    assert "Runs finished: 4 of 4." in md and "The grid is complete." in md
    table4 = md.split("## Table 4")[1].split("##")[0]
    body = [r for r in table4.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(body) == 4  # three Table 4 rows + random init, each with a number
    for row in body:
        assert re.search(r"\| \d+\.\d", row), row
    assert "What differs from the paper's setting" in md
    # the paper's Table 4 (linear probing) beside each row, and the ordering line under the table
    assert re.search(r"\| no parts \(random masking\) \|.*\| 63\.7 \(Table 4\) \| n/a \|", table4)
    assert re.search(r"\| learned parts \(SemMAE\) \|.*\| 65\.0 \(Table 4\) \| n/a \|", table4)
    assert re.search(r"\| raw-attention parts \|.*\| 63\.6 \(Table 4\) \| n/a \|", table4)
    (line,) = [r for r in table4.splitlines() if r.startswith("**Ordering vs the paper:**")]
    assert re.search(r"(matches|does not match) - \d of 3 row pairs", line)
    assert "ours: mean logistic regression top-1" in line
    summary = json.loads((out / f"{stem}.json").read_text())
    assert len(summary["runs"]) == 4 and summary["missing"] == []
    from PIL import Image

    with Image.open(out / f"{stem}.png") as img:
        assert img.width > 100


def test_attention_cache_holds_one_part_per_head(grid):
    root, _ = grid
    from semmae.data.part_cache import PartCache

    (cache,) = (root / "work" / "parts").glob("attention_grid*.cache")
    opened = PartCache.open(cache)
    assert opened.num_parts == 2  # mae_vit_micro has 2 heads
    ids, fg = opened[0]
    assert ids.shape == (4, 4) and int(ids.max()) < 2 and 0.0 <= float(fg.min()) and float(fg.max()) <= 1.0


def test_rerun_resumes_and_redoes_only_a_missing_run(grid):
    root, argv = grid
    out = root / "out"
    runs = out / _stem(out) / "per-run"
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    (runs / "attention_g2-seed0.json").unlink()
    (runs / "random_init-seed0.json").unlink()  # its random run is finished: re-evaluated on its own
    assert repro.main(argv) == 0
    after = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert set(after) == set(before)
    changed = {n for n in after if after[n] != before[n]}
    assert changed == {"attention_g2-seed0.json", "random_init-seed0.json"}


def test_split_subset_uses_the_library_and_zero_means_the_whole_split(tmp_path):
    src = write_image_folder(tmp_path / "src", classes=("a", "b"), per_class=5, size=8)
    one = repro.split_subset(src, tmp_path / "one", 2)
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*.png"))  # noqa: E731
    assert names(one) == names(make_subset(src, tmp_path / "lib", 2).out) and len(names(one)) == 4
    assert repro.split_subset(src, tmp_path / "all", 0) == src


def test_grid_selection_dedups_and_rejects_unknown_names():
    keys = [c.key for c in repro.select_grid(None)]
    assert len(keys) == len(set(keys)) == 10
    assert [c.key for c in repro.select_grid(["table4"])] == ["random", "adaptive_g2", "attention_g2"]
    assert len(repro.select_grid(["table3"])) == 7
    with pytest.raises(UserError, match="not a table"):
        repro.select_grid(["table9"])


def test_flip_only_configs_pretrain_with_augment_flip_and_others_keep_the_default(tmp_path):
    """The flip table (SemMAE's augmentation) is opt-in; its runs get `augment="flip"`, every other run MAE's."""
    assert [c.key for c in repro.select_grid(["flip"])] == ["random_flip", "adaptive_g2_flip"]
    args = repro.build_parser().parse_args(
        ["--preset", "smoke", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    )
    h = repro.Harness(args, repro.Preset.load("smoke"))
    h.data = {"train": "x"}
    for cfg in repro.GRID:
        run = h.pretrain_config(tmp_path / "r", cfg, 0, 1, None)
        assert run.augment == ("flip" if cfg.key.endswith("_flip") else "crop-flip"), cfg.key
        assert (run.masking, run.gamma, run.epochs, run.out) == (
            cfg.masking,
            cfg.gamma,
            1,
            str(tmp_path / "r"),
        )
        assert (run.patch_size, run.fg_keep) == ((4, 0.25) if cfg.fine else (None, 1.0))


def test_evaluation_view_can_change_on_a_finished_grid_but_training_settings_cannot(grid, tmp_path, capsys):
    root, argv = grid
    out = root / "out"
    runs = out / _stem(out) / "per-run"
    smoke = (BENCH / "repro_presets" / "smoke.yaml").read_text()
    whole = tmp_path / "smoke_whole.yaml"
    whole.write_text(smoke + "\nname: smoke\neval_crop_pct: 1.0\n")
    (runs / "attention_g2-seed0.json").unlink()
    at = argv.index("--preset") + 1
    assert (
        repro.main([*argv[:at], str(whole), *argv[at + 1 :]]) == 0
    )  # same work folder, only the view differs
    rec = json.loads((runs / "attention_g2-seed0.json").read_text())
    assert rec["preset"]["eval_crop_pct"] == 1.0
    import torch

    assert torch.load(rec["features"], weights_only=True)["key"]["crop_pct"] == 1.0  # the probe saw that view
    md = (out / f"{_stem(out)}.md").read_text()
    assert "bicubic Resize(32) + CenterCrop(32) (crop 1)" in md
    flagged = md.split("Evaluated with another view")[1].split("\n")[0]
    assert "random seed 0" in flagged and "attention_g2" not in flagged
    longer = tmp_path / "smoke_longer.yaml"
    longer.write_text(smoke.replace("epochs:", "epochs: 99 #", 1) + "\nname: smoke\n")
    assert repro.main([*argv[:at], str(longer), *argv[at + 1 :]]) == 2
    assert "another preset" in capsys.readouterr().err


repro_report = repro.repro_report  # semmae_lab.repro_report
PAPER_MD = Path("/work/shared/paper/semmae-neurips2022.md")


def _recs(table: str, values: dict[str, tuple[float, float | None]]) -> dict[str, list[dict]]:
    """Two seeds per row, ``{label: (fast probe, log. reg.)}`` (log. reg. None = not recorded)."""
    out = {}
    for label, (lin, logreg) in values.items():
        out[label] = [
            {"key": label, "seed": s, "knn_top1": 0.0, "linprobe_top1": lin + d}
            | ({} if logreg is None else {"logreg_top1": logreg + d})
            for s, d in ((0, -0.1), (1, 0.1))
        ]
    return out


def test_ordering_line_is_computed_from_the_numbers():
    labels = ["no parts (random masking)", "learned parts (SemMAE)", "raw-attention parts"]
    # paper: learned 65.0 > no parts 63.7 > raw attention 63.6
    same = _recs("table4", {labels[0]: (10.0, 40.0), labels[1]: (9.0, 45.0), labels[2]: (11.0, 39.0)})
    line = repro_report.ordering_line("table4", labels, same)
    assert line.startswith("**Ordering vs the paper:** matches - 3 of 3 row pairs")
    assert "ours: mean logistic regression top-1" in line and "Table 4" in line
    assert "Ours: learned parts (SemMAE) (45.00) > no parts (random masking) (40.00)" in line
    swapped = _recs("table4", {labels[0]: (10.0, 46.0), labels[1]: (9.0, 45.0), labels[2]: (11.0, 39.0)})
    line = repro_report.ordering_line("table4", labels, swapped)
    assert "does not match - 2 of 3 row pairs" in line
    # a row without logistic regression: the fast linear probe orders all rows instead (here: reversed)
    no_logreg = _recs("table4", {labels[0]: (10.0, 40.0), labels[1]: (9.0, None), labels[2]: (11.0, 39.0)})
    line = repro_report.ordering_line("table4", labels, no_logreg)
    assert "does not match - 0 of 3 row pairs" in line and "ours: mean fast linear probe top-1" in line
    # rows missing here or without a paper number are left out; fewer than two left: nothing to compare
    one = _recs("table4", {labels[0]: (10.0, 40.0), "some other row": (1.0, 99.0)})
    assert "nothing to compare" in repro_report.ordering_line("table4", [*labels, "some other row"], one)


def test_paper_numbers_are_keyed_by_grid_rows_and_quoted_from_the_paper():
    rows = {r for c in repro.GRID for r in c.rows}
    rows |= {(t, label + repro_report.KEPT_SUFFIX) for c in repro.GRID if c.fine for t, label in c.rows}
    assert set(repro_report.PAPER) <= rows  # a renamed row would silently lose its paper number
    assert {t for t, _ in repro_report.PAPER} == {"table1", "table3", "table4"}
    for (table, label), row in repro_report.PAPER.items():
        if row.linear_probe is not None:
            assert row.linear_probe.table == int(table[-1]), label
        else:  # the patch-P/2 rows evaluated on every patch: only the fine-tuning number (Table 2) applies
            assert (
                "P/2" in label and not label.endswith(repro_report.KEPT_SUFFIX) and row.fine_tune.table == 2
            )
    # the paper probed its 8x8 models on the kept quarter (Sec. 4.2): 66.8 / 68.7 sit beside that evaluation
    kept = {
        label: row
        for (t, label), row in repro_report.PAPER.items()
        if label.endswith(repro_report.KEPT_SUFFIX)
    }
    assert sorted(r.linear_probe.text for r in kept.values()) == ["66.8", "68.7"]
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} is not on this machine")
    text = PAPER_MD.read_text()
    captions = [(m.start(), m.end()) for m in re.finditer(r"\*\*(Table|Figure) \d+:\*\*", text)]

    def window(table: int) -> str:
        """From the caption before this table's (Table 3 prints its numbers above its caption) to the next."""
        at = text.index(f"**Table {table}:**")
        start = max([end for begin, end in captions if begin < at] + [at - 1500])
        stop = min([begin for begin, _ in captions if begin > at] + [len(text)])
        return text[start:stop]

    for row in repro_report.PAPER.values():
        for number in (row.linear_probe, row.fine_tune):
            if number is not None:
                pattern = rf"(?<![\d.]){re.escape(number.text)}(?![\d])"
                assert re.search(pattern, window(number.table)), number
    assert not re.search(r"(?<![\d.])68\.7(?![\d])", window(4))  # the window is the table's own


def test_patch_half_rows_are_evaluated_on_all_patches_and_on_the_kept_quarter(tmp_path):
    """Table 1's patch-P/2 rows: each run is probed twice - every patch, and the kept quarter whose foreground
    comes from the train and val part caches - and the summary prints both, the paper's 66.8 / 68.7 beside the
    kept-quarter rows."""
    data = tmp_path / "data"
    write_image_folder(data / "train", classes=("a", "b"), per_class=8, size=32, seed=0)
    write_image_folder(data / "val", classes=("a", "b"), per_class=4, size=32, seed=1)
    argv = ["--preset", "smoke", "--data", str(data), "--only", "mae_fine", "semmae_fine"]
    argv += ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert repro.main(argv) == 0
    out = tmp_path / "out"
    stem = _stem(out)
    for key in ("mae_fine", "semmae_fine"):
        rec = json.loads((out / stem / "per-run" / f"{key}-seed0.json").read_text())
        assert set(rec["kept"]) >= {"knn_top1", "linprobe_top1", "logreg_top1"}
        run = tmp_path / "work" / "runs" / f"{key}-seed0"
        all_key = json.loads((run / "eval" / "linprobe" / "results.json").read_text())
        kept = json.loads((run / "eval_kept" / "linprobe" / "results.json").read_text())
        assert all_key["tokens"] == "all"
        assert kept["tokens"] == "kept" and kept["keep_fraction"] == 0.25 and kept["foreground"] == "cache"
        assert kept["config"]["val_parts"].endswith("_val.cache")
    table1 = (out / f"{stem}.md").read_text().split("## Table 1")[1].split("##")[0]
    assert re.search(
        r"\| MAE, patch 4 \+ keep; eval on the kept quarter \| `mae_fine\+kept` \| 1 \|.*66\.8 \(Table 1\)",
        table1,
    )
    assert re.search(r"\| SemMAE, patch 4 \+ keep; eval on the kept quarter \|.*68\.7 \(Table 1\)", table1)
    assert re.search(
        r"\| SemMAE, patch 4 \+ keep \| `semmae_fine` \|.*\| n/a \| 84\.50 \(Table 2\) \|", table1
    )
    summary = json.loads((out / f"{stem}.json").read_text())
    assert not any(r.get("derived") for r in summary["runs"])  # derived rows are for the tables only
    # an older record without the kept-quarter evaluation gets it on the next run, without pretraining again
    path = out / stem / "per-run" / "mae_fine-seed0.json"
    rec = json.loads(path.read_text())
    del rec["kept"]
    path.write_text(json.dumps(rec))
    assert repro.main(argv) == 0
    assert "kept" in json.loads(path.read_text())
