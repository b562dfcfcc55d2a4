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
