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


def test_subset_is_balanced_and_deterministic(tmp_path):
    src = write_image_folder(tmp_path / "src", classes=("a", "b"), per_class=5, size=8)
    one = repro.make_subset(src, tmp_path / "one", 2)
    two = repro.make_subset(src, tmp_path / "two", 2)
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*.png"))  # noqa: E731
    assert names(one) == names(two) and len(names(one)) == 4
    assert {n.split("/")[0] for n in names(one)} == {"a", "b"}
    assert repro.make_subset(src, tmp_path / "all", 0) == src


def test_grid_selection_dedups_and_rejects_unknown_names():
    keys = [c.key for c in repro.select_grid(None)]
    assert len(keys) == len(set(keys)) == 10
    assert [c.key for c in repro.select_grid(["table4"])] == ["random", "adaptive_g2", "attention_g2"]
    assert len(repro.select_grid(["table3"])) == 7
    with pytest.raises(SystemExit, match="not a table"):
        repro.select_grid(["table9"])


def test_evaluation_view_can_change_on_a_finished_grid_but_training_settings_cannot(grid, tmp_path):
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
    with pytest.raises(SystemExit, match="another preset"):
        repro.main([*argv[:at], str(longer), *argv[at + 1 :]])
