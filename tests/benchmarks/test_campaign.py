"""benchmarks/campaign.py on a tiny plan (micro model, generated synthetic set): the gate, pair-by-pair order, a stop
after one run and a resume that neither reruns nor re-evaluates finished runs, the commit pin, the report, and the
statistics against direct formulas."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


repro = _load("repro")
campaign = _load("campaign")

PIN = {"commit": "a" * 40, "problem": ""}
BUDGET = yaml.safe_load((BENCH / "repro_presets" / "smoke.yaml").read_text())
BUDGET.pop("seeds")
BUDGET["linprobe_blrs"] = [0.1, 1.0]


def write_plan(path: Path, **over) -> Path:
    plan = {
        "name": "tiny",
        "question": "does the tiny schedule help?",
        "budget": BUDGET,
        "data": {"kind": "synth", "num_images": 30, "size": 32, "style": "random", "val_fraction": 0.3},
        "arms": [
            {"key": "mae", "masking": "random"},
            {"key": "oracle", "masking": "adaptive", "gamma": 2.0, "parts": "masks"},
            {"key": "learned", "masking": "adaptive", "gamma": 2.0, "parts": "learned"},
        ],
        "baseline": "mae",
        "seeds": 2,
        "primary": "logreg_top1",
        "secondary": ["knn_top1"],
        "gate_min_gain": -1000.0,  # the plumbing is under test here, not whether a 1-epoch micro MAE learns
        "gate_metrics": ["logreg_top1"],
        "gate_converged_probes": False,  # 20 tiny images: the sweep's accuracies tie; convergence is tested below
        **over,
    }
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    plan = write_plan(root / "tiny.yaml")
    argv = [str(plan), "--work", str(root / "work"), "--out", str(root / "out"), "--device", "cpu"]
    calls = []
    original = repro.Harness.evaluate

    def counting(self, out, seed, source):
        calls.append(out.name if out.parent.name == "runs" else out.parent.name)  # run_dir/eval, or the run
        return original(self, out, seed, source)

    repro.Harness.evaluate = counting
    try:
        assert campaign.main([*argv, "--max-runs", "1"], pin=PIN) == 0  # the gate (mae + untrained) + one run
        per_run = root / "out" / "campaign-tiny" / "per-run"
        first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in per_run.glob("*.json")}
        first_calls = list(calls)
        shutil.rmtree(root / "work")  # another machine: only the committed results folder survives
        assert campaign.main(argv, pin=PIN) == 0  # resumes: the rest, nothing twice
    finally:
        repro.Harness.evaluate = original
    return root, argv, first, first_calls, calls


def test_stop_after_one_run_then_resume_skips_finished_runs(stopped_and_resumed):
    root, _, first, first_calls, calls = stopped_and_resumed
    # seed 0 runs the baseline first (the gate), then the untrained encoder, then the next arm in plan order
    assert sorted(first) == ["mae-seed0.json", "oracle-seed0.json", "untrained-seed0.json"]
    assert first_calls == ["mae-seed0", "untrained-seed0", "oracle-seed0"]
    # the resume ran only what was left - seed 1 rotated by one (oracle, learned, mae) - and re-evaluated nothing
    assert calls[len(first_calls) :] == ["learned-seed0", "oracle-seed1", "learned-seed1", "mae-seed1"]
    per_run = root / "out" / "campaign-tiny" / "per-run"
    for name, (mtime, data) in first.items():
        assert (per_run / name).stat().st_mtime_ns == mtime and (per_run / name).read_bytes() == data
    # the committed caches were reused: no part encoder or part learning on the second machine
    assert not (root / "work" / "stages" / "part_encoder.json").exists()
    assert not (root / "work" / "stages" / "parts.json").exists()
    caches = sorted(p.name for p in (root / "out" / "campaign-tiny" / "caches").iterdir())
    assert caches == ["learned_grid4.cache", "learned_grid4_val.cache", "masks_grid4.cache"]


def test_a_changed_part_cache_is_refused(stopped_and_resumed, tmp_path, capsys):
    root, argv, *_ = stopped_and_resumed
    keep = tmp_path / "out" / "campaign-tiny"
    shutil.copytree(root / "out" / "campaign-tiny", keep)
    state = json.loads((keep / "campaign.json").read_text())
    state["caches"]["masks_grid4.cache"] = "0" * 64
    (keep / "campaign.json").write_text(json.dumps(state))
    argv = [argv[0], "--work", str(root / "work"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert campaign.main(argv, pin=PIN) == 2
    assert "differs from the one this campaign started with" in capsys.readouterr().err


def test_records_carry_the_commit_and_checkpoint_hash(stopped_and_resumed):
    root, *_ = stopped_and_resumed
    rec = json.loads((root / "out" / "campaign-tiny" / "per-run" / "oracle-seed1.json").read_text())
    assert rec["commit"] == PIN["commit"] and rec["campaign"] == "tiny"
    assert rec["checkpoint_sha256"] == campaign.sha256(rec["checkpoint"])
    assert rec["parts"] == "masks" and rec["masking"] == "adaptive"
    assert rec["linprobe_blrs"] == [0.1, 1.0] and "logreg_converged" in rec


def test_report_has_decisions_tables_figure_and_part_quality(stopped_and_resumed):
    root, *_ = stopped_and_resumed
    out = root / "out"
    summary = json.loads((out / "campaign-tiny.json").read_text())
    assert summary["complete"] and summary["gate"]["passed"]
    assert set(summary["decisions"]) == {"oracle", "learned"}
    for arm in ("oracle", "learned"):
        st = summary["stats"][arm]["logreg_top1"]
        runs = summary["runs"]
        want = [runs[f"{arm}-seed{s}"]["logreg_top1"] - runs[f"mae-seed{s}"]["logreg_top1"] for s in (0, 1)]
        assert st["diffs"] == pytest.approx(want) and st["n"] == 2
        assert summary["decisions"][arm]["verdict"] == "insufficient"  # 2 pairs: too few for any verdict
    # the learned cache was scored against the ground truth beside its baselines
    (quality,) = summary["part_quality"].values()
    assert {"learned", "spatial", "ceiling"} <= set(quality)
    md = (out / "campaign-tiny.md").read_text()
    assert "## Decisions" in md and "pairs 2/2 done, 0 left" in md
    assert "| `oracle` - `mae` | `logreg_top1` | 2 |" in md
    from PIL import Image

    with Image.open(out / "campaign-tiny.png") as img:
        assert img.width > 200 and img.height > 200


def test_status_line(stopped_and_resumed, capsys):
    _, argv, *_ = stopped_and_resumed
    assert campaign.main([*argv, "--status"], pin={"commit": "b" * 40, "problem": ""}) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("campaign tiny: pairs 2/2 done, 0 left;") and "min per pair" in line


def test_another_commit_is_refused_and_changes_nothing(stopped_and_resumed, capsys):
    root, argv, *_ = stopped_and_resumed
    before = {p: p.read_bytes() for p in (root / "out").rglob("*") if p.is_file()}
    assert campaign.main(argv, pin={"commit": "b" * 40, "problem": ""}) == 2
    err = capsys.readouterr().err
    assert "never mixes commits" in err and "aaaaaaaaaaaa" in err
    assert {p: p.read_bytes() for p in (root / "out").rglob("*") if p.is_file()} == before


def test_an_uncommitted_plan_or_tree_is_refused(tmp_path, capsys):
    plan = write_plan(tmp_path / "p.yaml")
    pin = {
        "commit": "c" * 40,
        "problem": "the plan p.yaml is not committed: commit it before the first result",
    }
    argv = [str(plan), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    assert campaign.main(argv, pin=pin) == 2
    assert "not committed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_failed_gate_stops_before_any_other_arm(tmp_path, capsys):
    arms = [{"key": "mae", "masking": "random"}, {"key": "b", "masking": "adaptive", "parts": "learned"}]
    plan = write_plan(tmp_path / "p.yaml", arms=arms)
    plan.write_text(plan.read_text().replace("gate_min_gain: -1000.0", "gate_min_gain: 1000.0"))
    argv = [str(plan), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert campaign.main(argv, pin=PIN) == 2
    assert "the gate failed" in capsys.readouterr().err
    runs = sorted(p.name for p in (tmp_path / "o" / "campaign-tiny" / "per-run").glob("*.json"))
    assert runs == ["mae-seed0.json", "untrained-seed0.json"]
    assert json.loads((tmp_path / "o" / "campaign-tiny" / "gate.json").read_text())["passed"] is False
    # the baseline reads no parts: the gate was decided before the part encoder, which never ran
    assert not (tmp_path / "w" / "stages" / "part_encoder.json").exists()
    assert not (tmp_path / "w" / "bootstrap").exists()


@pytest.mark.parametrize(
    "n_arms, seed, first", [(2, 0, "a"), (2, 1, "b"), (2, 2, "a"), (3, 1, "b"), (3, 2, "c")]
)
def test_arm_order_rotates_per_seed(tmp_path, n_arms, seed, first):
    arms = [{"key": k, "masking": "random"} for k in "abc"[:n_arms]]
    plan = campaign.Plan.load(write_plan(tmp_path / "p.yaml", arms=arms, baseline="a"))
    order = [a.key for a in plan.arm_order(seed)]
    assert order[0] == first and sorted(order) == list("abc"[:n_arms])


@pytest.mark.parametrize("plan_file", sorted(p.name for p in (BENCH / "campaigns").glob("*.yaml")))
def test_every_committed_plan_loads_and_names_its_file(plan_file):
    from semmae_lab.plan import Plan

    plan = Plan.load(BENCH / "campaigns" / plan_file)
    assert plan.name == Path(plan_file).stem  # run.sh finds a campaign's state by the plan's file name
    keys = [a.key for a in plan.arms]
    assert plan.baseline in keys
    if plan.contrasts:  # issue 40: each listed contrast decided by the rule, between two of the plan's arms
        assert all({c.arm, c.baseline} <= set(keys) and c.arm != c.baseline for c in plan.contrasts)
        assert set(plan.comparisons) == {f"{c.arm}-vs-{c.baseline}" for c in plan.contrasts}
    else:
        assert set(plan.comparisons) == set(keys) - {plan.baseline}
    assert plan.seeds >= 8  # issue 24: at least 8 pairs per campaign


def test_the_alpha_cap_plan_is_pre_registered_as_issue_40_asks():
    from semmae_lab.plan import Contrast, Plan

    plan = Plan.load(BENCH / "campaigns" / "imagenette-alpha-cap.yaml")
    before = Plan.load(BENCH / "campaigns" / "imagenette-p4keep.yaml")
    assert plan.budget == before.budget and plan.data == before.data  # same data and budget
    assert not set(plan.seed_list) & set(before.seed_list) and plan.seeds == 12  # 12 new paired seeds
    arms = {a.key: a for a in plan.arms}
    assert arms["mae"].masking == "random"
    assert (arms["semmae"].masking, arms["semmae"].gamma, arms["semmae"].alpha_max) == ("adaptive", 2.0, 1.0)
    assert (arms["capped"].masking, arms["capped"].gamma, arms["capped"].alpha_max) == ("adaptive", 2.0, 0.5)
    assert all(a.parts == "learned" and a.fine for a in plan.arms)
    assert plan.contrasts == (Contrast("capped", "mae"), Contrast("capped", "semmae"))
    assert (plan.primary, plan.alpha, plan.margin) == (before.primary, before.alpha, before.margin)
    runner = (BENCH / "campaigns" / "run.sh").read_text()
    assert "mechanism-synth-24 imagenette-alpha-cap)" in runner  # queued after the mechanism follow-up


def test_a_folder_with_its_own_part_masks_runs_the_oracle_arm(synth_dataset, tmp_path, capsys):
    """Oracle parts are not tied to the synthetic generator: any image folder with label PNGs beside it
    (``data: {kind: folder, path, masks}``) runs the mechanism test, and its cache holds each cell's majority label."""
    from collections import Counter

    from PIL import Image

    from semmae.data.part_cache import PartCache
    from semmae.parts.export import MASK_CELL_PIXELS

    arms = [{"key": "mae", "masking": "random"}, {"key": "oracle", "masking": "adaptive", "parts": "masks"}]
    data = {"kind": "folder", "path": str(synth_dataset), "masks": str(synth_dataset / "masks")}
    plan = write_plan(tmp_path / "p.yaml", arms=arms, data=data)
    argv = [str(plan), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert campaign.main([*argv, "--max-runs", "1"], pin=PIN) == 0
    keep = tmp_path / "o" / "campaign-tiny"
    rec = json.loads((keep / "per-run" / "oracle-seed0.json").read_text())
    assert rec["parts"] == "masks" and rec["masking"] == "adaptive"
    assert (
        f"ground-truth part masks `{synth_dataset / 'masks'}`"
        in (tmp_path / "o" / "campaign-tiny.md").read_text()
    )
    # the cache the oracle arm read, against a direct count over one image's mask cells
    train = synth_dataset / "train"
    paths = sorted(str(p.relative_to(train)) for p in train.rglob("*.png"))
    cache = PartCache.open(keep / "caches" / "masks_grid4.cache", paths)
    side = cache.grid * MASK_CELL_PIXELS
    with Image.open(synth_dataset / "masks" / "train" / paths[3]) as im:
        mask = np.asarray(im.resize((side, side), Image.NEAREST))
    part, _ = cache[3]
    for i in range(cache.grid):
        for j in range(cache.grid):
            cell = mask[
                i * MASK_CELL_PIXELS : (i + 1) * MASK_CELL_PIXELS,
                j * MASK_CELL_PIXELS : (j + 1) * MASK_CELL_PIXELS,
            ]
            counts = Counter(cell.ravel().tolist())
            top = max(counts.values())
            assert int(part[i, j]) == min(label for label, n in counts.items() if n == top)


def test_oracle_arms_need_ground_truth_masks(synth_dataset, tmp_path, capsys):
    arms = [{"key": "mae", "masking": "random"}, {"key": "oracle", "masking": "adaptive", "parts": "masks"}]
    plan = write_plan(tmp_path / "p.yaml", arms=arms, data={"kind": "folder", "path": str(synth_dataset)})
    argv = [str(plan), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert campaign.main(argv, pin=PIN) == 2
    assert "parts: masks needs ground-truth part masks" in capsys.readouterr().err
    # a masks folder without a validation split is refused before any run, naming the folder it looked for
    masks = tmp_path / "masks"
    shutil.copytree(synth_dataset / "masks" / "train", masks / "train")
    data = {"kind": "folder", "path": str(synth_dataset), "masks": str(masks)}
    write_plan(tmp_path / "p.yaml", arms=arms, data=data)
    assert campaign.main(argv, pin=PIN) == 2
    assert f"{masks / 'val'} does not exist" in capsys.readouterr().err
    assert not list((tmp_path / "o").rglob("*-seed0.json"))
