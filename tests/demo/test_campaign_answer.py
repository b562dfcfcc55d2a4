"""The demo report's one-line answer must say what the committed Imagenette campaign found (no stale numbers)."""

import json
from pathlib import Path

from semmae.demo.make_report import CAMPAIGN_ANSWER

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "campaign-imagenette-p4keep.json"


def test_campaign_answer_matches_the_committed_imagenette_campaign():
    record = json.loads(RESULTS.read_text())
    assert record["complete"], "the demo quotes the campaign only once every planned pair is in"
    stats = record["stats"]["semmae"][record["plan"]["primary"]]
    assert record["decisions"]["semmae"]["verdict"] == "hurts"
    lo, hi = stats["ci95"]
    assert f"{stats['n']} paired seeds" in CAMPAIGN_ANSWER
    assert f"cost {-stats['mean']:.2f} log. reg. points" in CAMPAIGN_ANSWER
    assert f"95 % CI {-hi:.2f} to {-lo:.2f}" in CAMPAIGN_ANSWER


def test_campaign_answer_on_the_mechanism_campaign_matches_its_record():
    record = json.loads(RESULTS.with_name("campaign-mechanism-synth.json").read_text())
    assert record["complete"]
    for arm in ("oracle", "learned"):  # perfect and learned parts
        assert record["decisions"][arm]["verdict"] == "inconclusive"
        assert record["stats"][arm][record["plan"]["primary"]]["n"] == 8
    assert "(8 pairs, inconclusive)" in CAMPAIGN_ANSWER


def test_the_evidence_section_leads_with_the_answer(tmp_path):
    from types import SimpleNamespace

    from semmae.demo.budgets import BUDGETS
    from semmae.demo.make_report import evidence_section

    demo = SimpleNamespace(cfg=SimpleNamespace(budget="small"), budget=BUDGETS["small"], seeds=[0, 1])
    section = evidence_section(demo, tmp_path / "evidence.png")
    assert section.figures[0].path.exists()
    assert (
        section.figures_first and "tour of the pipeline" in section.text and CAMPAIGN_ANSWER in section.text
    )
    assert "cannot decide anything" in section.text
    verdicts = [row[-1] for row in section.tables[0].rows]
    assert "hurts" in verdicts and all(
        v in {"helps", "hurts", "null", "inconclusive", "interim"} for v in verdicts
    )
