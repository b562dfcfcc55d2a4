"""Issue 40 in the campaign runner, on fake records (no training): an arm's ``alpha_max`` reaches its pretraining
config and its record; a plan's ``contrasts:`` (each {arm, baseline}) are each decided by the rule, old plans keep
every arm against ``baseline``; beside each decision the Wilcoxon p and the leave-one-seed-out CI bounds; an
interim report states numbers only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from _campaign_plans import write_smoke_plan

from semmae.errors import UserError
from semmae.eval.paired import paired_stats
from semmae_lab.campaign import RECORD_HASH, Campaign, record_digest
from semmae_lab.grid import GridConfig
from semmae_lab.plan import UNTRAINED, Contrast, Plan

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
PIN = {"commit": "a" * 40, "problem": ""}
ARMS = [
    {"key": "mae", "masking": "random"},
    {"key": "semmae", "masking": "adaptive", "gamma": 2.0},
    {"key": "capped", "masking": "adaptive", "gamma": 2.0, "alpha_max": 0.5},
]
CONTRASTS = [{"arm": "capped", "baseline": "mae"}, {"arm": "capped", "baseline": "semmae"}]
VERDICT_WORDS = ("well-powered", "null", "helps", "hurts", "inconclusive", "reproduces", "insufficient")


def write_plan(path: Path, **over) -> Path:
    fields = {"name": "cap", "question": "does the cap help?", "arms": ARMS, "baseline": "mae"}
    return write_smoke_plan(path, **{**fields, "contrasts": CONTRASTS, "seeds": 6, **over})


def campaign(plan_path: Path, root: Path) -> Campaign:
    return Campaign(Plan.load(plan_path), root / "work", root / "out", "cpu", pin=dict(PIN), repo=REPO)


#: per seed index: logreg_top1 of each arm (capped - mae and capped - semmae differ from seed to seed)
TOP1 = {
    "mae": [50.0, 51.0, 49.5, 50.2, 50.8, 49.9],
    "semmae": [49.4, 50.1, 49.0, 49.8, 50.0, 49.1],
    "capped": [50.3, 51.6, 49.4, 50.9, 51.0, 50.5],
}


def fake_records(c: Campaign, pairs: int | None = None, top1: dict | None = None) -> None:
    top1 = top1 or TOP1
    c.runs_dir.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(c.seeds[:pairs]):
        for key in c.arms:
            value = top1[key][i]
            rec = {
                **c.base_record(key, seed),
                "masking": c.arms[key].masking,
                "gamma": c.arms[key].gamma,
                "logreg_top1": value,
                "knn_top1": value - 5 + 0.1 * i,
                "pretrain_seconds": 1.0,
                "eval_seconds": 1.0,
            }
            c.finish(c.record_path(key, seed), rec)


def report(c: Campaign) -> tuple[dict, str]:
    c.summarise()
    return json.loads((c.out / "campaign-cap.json").read_text()), (c.out / "campaign-cap.md").read_text()


# -- the plan ---------------------------------------------------------------------------------------------------
def test_contrasts_and_alpha_max_load(tmp_path):
    plan = Plan.load(write_plan(tmp_path / "p.yaml"))
    assert {a.key: a.alpha_max for a in plan.arms} == {"mae": 1.0, "semmae": 1.0, "capped": 0.5}
    assert plan.contrast_map == {
        "capped-vs-mae": Contrast("capped", "mae"),
        "capped-vs-semmae": Contrast("capped", "semmae"),
    }
    assert plan.comparisons == ["capped-vs-mae", "capped-vs-semmae"]


def test_a_plan_without_contrasts_compares_every_arm_with_the_baseline(tmp_path):
    plan = Plan.load(write_plan(tmp_path / "p.yaml", contrasts=None))
    assert plan.contrasts == ()
    assert plan.contrast_map == {"semmae": Contrast("semmae", "mae"), "capped": Contrast("capped", "mae")}
    raw = yaml.safe_load((tmp_path / "p.yaml").read_text())
    del raw["contrasts"]
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(raw))
    assert Plan.load(tmp_path / "q.yaml").comparisons == ["semmae", "capped"]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"contrasts": [{"arm": "capped", "baseline": "nope"}]}, "must be two different arms"),
        ({"contrasts": [{"arm": "capped", "baseline": "capped"}]}, "must be two different arms"),
        ({"contrasts": [CONTRASTS[0], CONTRASTS[0]]}, "listed twice"),
        ({"contrasts": [{"arm": "capped", "base": "mae"}]}, "unknown keys ['base']"),
        ({"contrasts": [{"arm": "capped"}]}, "contrasts entry"),
        ({"arms": [*ARMS[:2], {**ARMS[2], "alpha_max": 0.0}]}, "alpha_max must be a number in (0, 1]"),
        ({"arms": [*ARMS[:2], {**ARMS[2], "alpha_max": 1.5}]}, "alpha_max must be a number in (0, 1]"),
        ({"arms": [{**ARMS[0], "alpha_max": 0.5}, *ARMS[1:]]}, "alpha_max caps the adaptive schedules"),
        ({"arms": [*ARMS[:2], {**ARMS[2], "alpha": 0.5}]}, "unknown keys ['alpha']"),
    ],
)
def test_bad_contrasts_and_caps_are_refused_in_one_line(tmp_path, over, message):
    with pytest.raises(UserError, match=re.escape(message)):
        Plan.load(write_plan(tmp_path / "p.yaml", **over))


# -- alpha_max through the runner ----------------------------------------------------------------------------------
def test_alpha_max_reaches_the_pretrain_config_like_gamma(tmp_path):
    c = campaign(write_plan(tmp_path / "p.yaml"), tmp_path)
    c.data = {"train": str(tmp_path / "train")}
    for key, cap in (("mae", 1.0), ("semmae", 1.0), ("capped", 0.5)):
        cfg = c.pretrain_config(
            tmp_path / key, c.arms[key].grid_config(), 0, 1, "cache" if key != "mae" else None
        )
        assert cfg.alpha_max == cap and cfg.gamma == c.arms[key].gamma and cfg.masking == c.arms[key].masking
        cfg.validate()
    # the part encoder is no arm: the paper's default
    assert (
        c.pretrain_config(tmp_path / "b", GridConfig("part_encoder", "random"), 0, 1, None).alpha_max == 1.0
    )


def test_records_carry_alpha_max_under_their_hash(tmp_path):
    c = campaign(write_plan(tmp_path / "p.yaml"), tmp_path)
    c.claim()
    fake_records(c, pairs=1)
    for key, cap in (("mae", 1.0), ("semmae", 1.0), ("capped", 0.5)):
        rec = json.loads(c.record_path(key, c.seeds[0]).read_text())
        assert rec["alpha_max"] == cap and rec[RECORD_HASH] == record_digest(rec)
    untrained = {**c.base_record(UNTRAINED, c.seeds[0]), "logreg_top1": 1.0, "pretrain_seconds": 0.0}
    c.finish(c.record_path(UNTRAINED, c.seeds[0]), {**untrained, "eval_seconds": 1.0})
    assert "alpha_max" not in json.loads(c.record_path(UNTRAINED, c.seeds[0]).read_text())


# -- the report -------------------------------------------------------------------------------------------------
def test_each_contrast_is_decided_with_its_own_baseline_and_robustness(tmp_path):
    c = campaign(write_plan(tmp_path / "p.yaml"), tmp_path)
    c.claim()
    fake_records(c)
    summary, md = report(c)
    assert summary["complete"]
    assert list(summary["decisions"]) == ["capped-vs-mae", "capped-vs-semmae"]
    for key, base in (("capped-vs-mae", "mae"), ("capped-vs-semmae", "semmae")):
        diffs = [a - b for a, b in zip(TOP1["capped"], TOP1[base])]
        st = summary["stats"][key]["logreg_top1"]
        assert st["diffs"] == pytest.approx(diffs)
        want = paired_stats(diffs)
        d = summary["decisions"][key]
        assert d["arm"] == "capped" and d["baseline"] == base
        assert d["robustness"]["p_wilcoxon"] == pytest.approx(want["p_wilcoxon"])
        for side in ("lower", "upper"):
            assert d["robustness"]["loo_ci95"][side] == pytest.approx(want["loo_ci95"][side])
        assert st["p_wilcoxon"] == pytest.approx(want["p_wilcoxon"])
        line = next(x for x in md.splitlines() if x.startswith(f"- `capped` - `{base}` on `logreg_top1`"))
        assert f"**{d['verdict']}**" in line and d["verdict"] != "interim"
        assert f"Wilcoxon signed-rank p = {want['p_wilcoxon']:.3f}" in line
        lo = want["loo_ci95"]["lower"]
        assert f"lower bound spans [{lo[0]:+.2f}, {lo[1]:+.2f}]" in line
        assert f"| `capped` - `{base}` | `logreg_top1` | 6 |" in md
    # capped beats the paper's schedule in every seed here: the rule says so for that contrast
    assert summary["decisions"]["capped-vs-semmae"]["verdict"] == "helps"
    assert "Contrasts, each decided by the rule below: `capped` - `mae`; `capped` - `semmae`" in md
    assert "alpha capped at 0.5" in md
    assert summary["plan"]["contrasts"] == CONTRASTS
    assert (c.out / "campaign-cap.png").exists()


def test_an_interim_report_states_numbers_only(tmp_path):
    """13 of 24 pairs whose differences would make a well-powered null: no verdict words, only the numbers."""
    tiny = [0.1, -0.1, 0.05, -0.05, 0.0, 0.1, -0.1, 0.02, 0.0, 0.03, -0.02, 0.01, 0.04]
    top1 = {"mae": [50.0 + i for i in range(24)], "semmae": [50.0 + i for i in range(24)]}
    top1["capped"] = [50.0 + i + (tiny[i] if i < 13 else 0.0) for i in range(24)]
    c = campaign(write_plan(tmp_path / "p.yaml", seeds=24, contrasts=CONTRASTS[:1]), tmp_path)
    c.claim()
    fake_records(c, pairs=13, top1=top1)
    summary, md = report(c)
    assert not summary["complete"]
    d = summary["decisions"]["capped-vs-mae"]
    st = summary["stats"]["capped-vs-mae"]["logreg_top1"]
    lo, hi = st["ci95"]
    assert d["verdict"] == "interim"
    assert d["sentence"] == (
        f"interim: 13 of 24 pairs, mean {st['mean']:+.2f}, 95 % CI [{lo:+.2f}, {hi:+.2f}]; no decision until 24"
    )
    decisions = md.split("## Decisions", 1)[1].split("## Paired differences", 1)[0]
    assert "interim: 13 of 24 pairs" in decisions and "no decision until 24" in decisions
    for word in VERDICT_WORDS:
        assert word not in decisions and word not in d["sentence"]


def test_a_plan_without_contrasts_reports_as_before(tmp_path):
    c = campaign(write_plan(tmp_path / "p.yaml", contrasts=None), tmp_path)
    c.claim()
    fake_records(c)
    summary, md = report(c)
    assert list(summary["stats"]) == ["semmae", "capped"] == list(summary["decisions"])
    assert "- Baseline `mae`;" in md
    assert "| `semmae` - `mae` | `logreg_top1` | 6 |" in md
