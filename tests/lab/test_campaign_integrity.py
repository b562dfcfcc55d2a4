"""Campaign integrity (issue 37), on fake campaign state and records (no training): one work folder per plan (the
binding, and the adoption rule for folders from before it), ``--report-only`` from the recorded plan only, and
per-run records' content hashes (an edited record is named, never averaged)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from _campaign_plans import write_smoke_plan

from semmae_lab.campaign import (
    BINDING_NAME,
    RECORD_HASH,
    Campaign,
    record_digest,
)
from semmae_lab.plan import Plan

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
PIN = {"commit": "a" * 40, "problem": ""}
SEEDS = 3


def _load_cli():
    name = "campaign_cli_integrity"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / "campaign.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


cli = _load_cli()


def write_plan(path: Path, **over) -> Path:
    arms = [{"key": "mae", "masking": "random"}, {"key": "b", "masking": "adaptive", "gamma": 2.0}]
    fields = {"name": "tiny", "question": "does b help?", "arms": arms, "baseline": "mae", "seeds": SEEDS}
    return write_smoke_plan(path, **{**fields, **over})


def campaign(plan_path: Path, root: Path, work: str = "work", out: str = "out") -> Campaign:
    return Campaign(Plan.load(plan_path), root / work, root / out, "cpu", pin=dict(PIN), repo=REPO)


def fake_records(c: Campaign) -> None:
    """Finished records for every arm and seed, written by the runner's own ``finish`` (b beats mae by 1 point)."""
    c.runs_dir.mkdir(parents=True, exist_ok=True)
    for seed in c.seeds:
        for key, top1 in (("mae", 50.0 + seed), ("b", 51.0 + seed)):
            rec = {
                **c.base_record(key, seed),
                "logreg_top1": top1,
                "knn_top1": top1 - 5,
                "pretrain_seconds": 1.0,
                "eval_seconds": 1.0,
            }
            c.finish(c.record_path(key, seed), rec)


@pytest.fixture
def started(tmp_path):
    """A started campaign ``tiny`` (state, bound work folder, every record) as this code writes it."""
    plan = write_plan(tmp_path / "tiny.yaml")
    c = campaign(plan, tmp_path)
    c.claim()
    fake_records(c)
    return tmp_path, plan


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders if f.exists() for p in f.rglob("*") if p.is_file()}


def argv(plan: Path, root: Path, *extra: str, work: str = "work", out: str = "out") -> list[str]:
    return [str(plan), "--work", str(root / work), "--out", str(root / out), "--device", "cpu", *extra]


# -- 1. one work folder, one plan --------------------------------------------------------------------------------
def test_the_first_run_binds_the_work_folder_to_the_plan(started):
    root, plan = started
    binding = json.loads((root / "work" / BINDING_NAME).read_text())
    assert binding["name"] == "tiny" and binding["plan_sha256"] == campaign(plan, root).plan_sha
    assert binding["adopted"] is False
    state = json.loads((root / "out" / "campaign-tiny" / "campaign.json").read_text())
    assert state["plan_text"] == plan.read_text() and state["records_hashed"] is True
    campaign(plan, root).claim()  # the same plan resumes


@pytest.mark.parametrize("mode", [[], ["--status"], ["--report-only"]])
def test_another_plan_on_a_bound_work_is_refused_and_nothing_is_touched(started, capsys, mode):
    root, _ = started
    other = write_plan(root / "other.yaml", name="other")
    before = snapshot(root / "work", root / "out")
    assert cli.main(argv(other, root, *mode), pin=dict(PIN)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "belongs to campaign tiny" in err and "use another --work" in err
    assert snapshot(root / "work", root / "out") == before
    assert not (root / "out" / "campaign-other").exists()


def test_an_edited_plan_of_the_same_name_is_refused_on_its_bound_work(started, capsys):
    root, plan = started
    plan.write_text(plan.read_text().replace("seeds: 3", "seeds: 4"))
    before = snapshot(root / "work")
    # a fresh --out: no state says the plan changed; the work folder's binding does
    assert cli.main(argv(plan, root, out="out2"), pin=dict(PIN)) == 2
    assert "belongs to another version of this plan" in capsys.readouterr().err
    assert snapshot(root / "work") == before and not (root / "out2").exists()


def _legacy_state(root: Path, plan: Path, out: str = "out") -> None:
    """A campaign state as the code before bindings wrote it (no plan text, no records_hashed)."""
    keep = root / out / "campaign-tiny"
    keep.mkdir(parents=True, exist_ok=True)
    state = {
        "name": "tiny",
        "plan": str(plan),
        "plan_sha256": campaign(plan, root).plan_sha,
        "commit": PIN["commit"],
        "device": "cpu",
        "started": "2026-01-01T00:00:00+00:00",
    }
    (keep / "campaign.json").write_text(json.dumps(state))


def _run_folder(work: Path, name: str, parts: str | None = None) -> None:
    run = work / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"out: {run}\nparts: {parts}\n")


def test_an_unbound_folder_with_content_and_no_started_campaign_is_refused(tmp_path, capsys):
    plan = write_plan(tmp_path / "tiny.yaml")
    work = tmp_path / "tiny"
    _run_folder(work, "mae-seed0")
    before = snapshot(work)
    assert cli.main(argv(plan, tmp_path, work="tiny"), pin=dict(PIN)) == 2
    assert "no started campaign tiny with this plan vouches" in capsys.readouterr().err
    assert snapshot(work) == before and not (work / BINDING_NAME).exists()
    assert not (tmp_path / "out" / "campaign-tiny").exists()


def test_an_unbound_folder_of_this_plan_is_adopted(tmp_path):
    plan = write_plan(tmp_path / "tiny.yaml")
    _legacy_state(tmp_path, plan)
    work = tmp_path / "tiny"  # run.sh's <WORK>/<plan name>
    _run_folder(work, "mae-seed0")
    _run_folder(work, "b-seed0", parts=f"{tmp_path}/out/campaign-tiny/caches/masks_grid4.cache")
    before = snapshot(work)
    campaign(plan, tmp_path, work="tiny").claim()
    binding = json.loads((work / BINDING_NAME).read_text())
    assert binding["name"] == "tiny" and binding["adopted"] is True
    assert {
        p: b for p, b in snapshot(work).items() if p.name != BINDING_NAME
    } == before  # nothing else changed


@pytest.mark.parametrize(
    "case, message",
    [
        ("other_caches", "holds runs of campaign other"),
        ("other_records", "holds runs of campaign other"),
        ("stray_run", "runs/x-seed0 is not a run of tiny"),
        ("no_name", "nothing in it names campaign tiny"),
        ("other_hash", "changed since"),  # the state check refuses it first
    ],
)
def test_an_unbound_folder_not_shown_to_be_this_plans_is_refused(tmp_path, capsys, case, message):
    plan = write_plan(tmp_path / "tiny.yaml")
    _legacy_state(tmp_path, plan)
    name = "somewhere" if case == "no_name" else "tiny"
    work = tmp_path / name
    _run_folder(work, "mae-seed0")
    if case == "other_caches":
        _run_folder(work, "b-seed0", parts="/x/results/campaign-other/caches/masks_grid4.cache")
    elif case == "other_records":  # the first plan's records cite checkpoints in this folder
        ckpt = work / "runs" / "mae-seed0" / "checkpoints" / "checkpoint-0.pth"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        per_run = tmp_path / "out" / "campaign-other" / "per-run"
        per_run.mkdir(parents=True)
        rec = {"key": "mae", "seed": 0, "campaign": "other", "checkpoint": str(ckpt)}
        (per_run / "mae-seed0.json").write_text(json.dumps(rec))
    elif case == "stray_run":
        _run_folder(work, "x-seed0")
    elif case == "other_hash":
        plan.write_text(plan.read_text().replace("seeds: 3", "seeds: 4"))
    before = snapshot(work, tmp_path / "out")
    assert cli.main(argv(plan, tmp_path, work=name), pin=dict(PIN)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert snapshot(work, tmp_path / "out") == before and not (work / BINDING_NAME).exists()


# -- 2. --report-only uses the recorded plan ----------------------------------------------------------------------
def test_report_only_with_an_edited_plan_reports_from_the_recorded_one(started, capsys):
    root, plan = started
    recorded_sha = campaign(plan, root).plan_sha
    plan.write_text(
        plan.read_text().replace("margin: 1.0", "margin: 50.0")
    )  # a decision rule moved after the fact
    assert cli.main(argv(plan, root, "--report-only"), pin=dict(PIN)) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "differs from the one campaign tiny recorded" in captured.err
    summary = json.loads((root / "out" / "campaign-tiny.json").read_text())
    assert summary["plan"]["margin"] == 1.0 and summary["plan_sha256"] == recorded_sha
    assert summary["plan_recorded"] is True and summary["plan_note"]
    md = (root / "out" / "campaign-tiny.md").read_text()
    assert f"(sha256 {recorded_sha[:12]}), committed before the first result" in md
    assert "**Plan file changed:**" in md and "+-50" not in md


def test_report_only_refuses_an_edited_plan_it_cannot_recover(started, capsys):
    root, plan = started
    state_path = root / "out" / "campaign-tiny" / "campaign.json"
    state = json.loads(state_path.read_text())
    del state["plan_text"]  # a state from before the text was kept; its commit ("aaa...") is not in this repo
    state["plan"] = str(root / "gone.yaml")
    state_path.write_text(json.dumps(state))
    plan.write_text(plan.read_text().replace("margin: 1.0", "margin: 50.0"))
    assert cli.main(argv(plan, root, "--report-only"), pin=dict(PIN)) == 2
    err = capsys.readouterr().err
    assert "cannot be recovered" in err and "nothing reported" in err
    assert (
        not (root / "out" / "campaign-tiny.md").exists()
        and not (root / "out" / "campaign-tiny.json").exists()
    )


def test_report_only_without_a_campaign_state_is_refused(tmp_path, capsys):
    plan = write_plan(tmp_path / "tiny.yaml")
    assert cli.main(argv(plan, tmp_path, "--report-only"), pin=dict(PIN)) == 2
    assert "no campaign state" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


LIVE = BENCH / "results" / "campaign-mechanism-synth-24"


@pytest.fixture
def live_copy(tmp_path):
    """A copy of the committed mechanism-synth-24 state and records (written at 88b2650: no content hashes)."""
    if not (LIVE / "campaign.json").exists():
        pytest.skip("no committed mechanism-synth-24 campaign")
    keep = tmp_path / "out" / "campaign-mechanism-synth-24"
    keep.mkdir(parents=True)
    for name in ("campaign.json", "gate.json"):
        shutil.copy(LIVE / name, keep / name)
    for name in ("per-run", "stages"):
        shutil.copytree(LIVE / name, keep / name)
    return tmp_path, keep


def test_run_sh_report_only_on_the_live_campaign_keeps_working(live_copy, capsys):
    """What run.sh runs from the main checkout after each run: the plan file in this checkout, old records."""
    root, keep = live_copy
    plan = BENCH / "campaigns" / "mechanism-synth-24.yaml"
    n = len(list((keep / "per-run").glob("*.json")))
    assert cli.main(argv(plan, root, "--report-only"), pin=dict(PIN)) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("campaign mechanism-synth-24: pairs") and not captured.err
    summary = json.loads((root / "out" / "campaign-mechanism-synth-24.json").read_text())
    state = json.loads((keep / "campaign.json").read_text())
    assert summary["commit"] == state["commit"] and summary["plan_recorded"] is True
    assert len(summary["runs"]) == n and summary["unhashed_records"] == n and summary["excluded"] == []
    md = (root / "out" / "campaign-mechanism-synth-24.md").read_text()
    assert "committed before the first result" in md
    assert f"{n} of {n} records carry no content hash" in md
    assert not (root / "work" / BINDING_NAME).exists()  # reporting never binds a work folder


def test_report_only_on_the_live_campaign_with_an_edited_plan_uses_the_plan_at_its_commit(live_copy, capsys):
    root, _ = live_copy
    plan = root / "mechanism-synth-24.yaml"
    raw = yaml.safe_load((BENCH / "campaigns" / "mechanism-synth-24.yaml").read_text())
    plan.write_text(yaml.safe_dump({**raw, "margin": 99.0}))
    assert cli.main(argv(plan, root, "--report-only"), pin=dict(PIN)) == 0
    assert "reporting from the recorded plan" in capsys.readouterr().err
    summary = json.loads((root / "out" / "campaign-mechanism-synth-24.json").read_text())
    assert summary["plan"]["margin"] == raw.get("margin", 1.0) != 99.0
    assert summary["plan_sha256"] == json.loads((LIVE / "campaign.json").read_text())["plan_sha256"]


# -- 3. per-run records carry a content hash ----------------------------------------------------------------------
def test_records_carry_a_content_hash(started):
    root, _ = started
    for path in (root / "out" / "campaign-tiny" / "per-run").glob("*.json"):
        rec = json.loads(path.read_text())
        assert rec[RECORD_HASH] == record_digest(rec)


def test_records_carry_the_machine_load_and_the_report_shows_it(tmp_path, monkeypatch, capsys):
    import semmae_lab.campaign as campaign_module

    loads = iter([0.5, 3.25] * 100)  # each run: start, end
    monkeypatch.setattr(campaign_module.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(campaign_module.os, "cpu_count", lambda: 2)
    plan = write_plan(tmp_path / "tiny.yaml")
    c = campaign(plan, tmp_path)
    c.claim()
    c.runs_dir.mkdir(parents=True, exist_ok=True)
    for seed in c.seeds:
        for key, top1 in (("mae", 50.0 + seed), ("b", 51.0 + seed)):
            c._load_start = campaign_module.load_average()  # as run_arm does before the run
            rec = {**c.base_record(key, seed), "logreg_top1": top1, "knn_top1": top1, "pretrain_seconds": 1.0}
            c.finish(c.record_path(key, seed), {**rec, "eval_seconds": 1.0})
    rec = json.loads((tmp_path / "out" / "campaign-tiny" / "per-run" / "b-seed1.json").read_text())
    assert rec["machine_load"] == {"cpus": 2, "start": 0.5, "end": 3.25}
    assert rec[RECORD_HASH] == record_digest(rec)  # hashed with the load in it
    _report(tmp_path, plan, capsys)
    md = (tmp_path / "out" / "campaign-tiny.md").read_text()
    assert "| `b` | 3 | 1 | 1 | - | 0.5 / 3.2 of 2 cores |" in md


def test_a_report_of_records_without_a_load_says_so(started, capsys):
    root, plan = started
    for path in (root / "out" / "campaign-tiny" / "per-run").glob("*.json"):
        rec = json.loads(path.read_text())
        del rec["machine_load"]
        rec[RECORD_HASH] = record_digest({k: v for k, v in rec.items() if k != RECORD_HASH})
        path.write_text(json.dumps(rec))
    _report(root, plan, capsys)
    assert "| `mae` | 3 | 1 | 1 | - | not recorded |" in (root / "out" / "campaign-tiny.md").read_text()


def _report(root: Path, plan: Path, capsys) -> dict:
    assert cli.main(argv(plan, root, "--report-only"), pin=dict(PIN)) == 0
    capsys.readouterr()
    return json.loads((root / "out" / "campaign-tiny.json").read_text())


def test_a_hand_edited_record_is_named_and_not_averaged(started, capsys):
    root, plan = started
    path = root / "out" / "campaign-tiny" / "per-run" / "b-seed1.json"
    rec = json.loads(path.read_text())
    rec["logreg_top1"] += 49.0
    path.write_text(json.dumps(rec, indent=2))
    edited = path.read_bytes()
    summary = _report(root, plan, capsys)
    assert summary["excluded"] == ["edited: per-run/b-seed1.json"]
    assert "b-seed1" not in summary["runs"] and summary["complete"] is False
    st = summary["stats"]["b"]["logreg_top1"]
    assert st["n"] == 2 and st["diffs"] == pytest.approx([1.0, 1.0])  # the +49 is not in the mean
    md = (root / "out" / "campaign-tiny.md").read_text()
    assert "`edited: per-run/b-seed1.json`" in md and "pairs 2/3 done" in md
    assert path.read_bytes() == edited  # the report names it and leaves it where it is


def test_a_record_stripped_of_its_hash_is_edited_in_a_hashing_campaign(started, capsys):
    root, plan = started
    path = root / "out" / "campaign-tiny" / "per-run" / "mae-seed0.json"
    rec = json.loads(path.read_text())
    del rec[RECORD_HASH]
    rec["logreg_top1"] = 0.0
    path.write_text(json.dumps(rec))
    summary = _report(root, plan, capsys)
    assert summary["excluded"] == ["edited: per-run/mae-seed0.json"] and summary["unhashed_records"] == 0


def test_unhashed_records_of_an_older_campaign_are_counted_and_said(tmp_path, capsys):
    plan = write_plan(tmp_path / "tiny.yaml")
    _legacy_state(tmp_path, plan)
    c = campaign(plan, tmp_path)
    fake_records(c)
    for path in c.runs_dir.glob("*.json"):  # as the code before hashes wrote them
        rec = json.loads(path.read_text())
        del rec[RECORD_HASH]
        path.write_text(json.dumps(rec))
    summary = _report(tmp_path, plan, capsys)
    assert summary["excluded"] == [] and len(summary["runs"]) == 2 * SEEDS
    assert summary["unhashed_records"] == 2 * SEEDS and summary["complete"] is True
    md = (tmp_path / "out" / "campaign-tiny.md").read_text()
    assert f"{2 * SEEDS} of {2 * SEEDS} records carry no content hash" in md


def test_the_runner_sets_an_edited_record_aside_and_reruns_it(started, monkeypatch, capsys):
    root, plan = started
    c = campaign(plan, root)
    path = c.record_path("b", 2)
    rec = json.loads(path.read_text())
    rec["logreg_top1"] += 49.0
    path.write_text(json.dumps(rec))
    ran = []
    monkeypatch.setattr(Campaign, "run_one", lambda self, cfg, seed: ran.append((cfg.key, seed)))
    assert c.run_arm(c.arms["b"], 2) is True and ran == [("b", 2)]
    assert "edited after the runner wrote it" in capsys.readouterr().out
    (aside,) = c.runs_dir.glob("b-seed2.rejected-*.json")
    assert json.loads(aside.read_text())["logreg_top1"] == rec["logreg_top1"] and not path.exists()
    assert c.run_arm(c.arms["mae"], 2) is False  # an unedited record stands
