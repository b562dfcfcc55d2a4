"""The demo report's Evidence section draws from ``semmae/demo/evidence.json``, a summary that ships with the
package: it must equal what ``benchmarks/evidence_figure.py --summary`` makes from the committed campaign records
(regenerated in memory here; skipped in an installed package, which has no benchmarks/results)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

from semmae.demo.evidence import EVIDENCE_FILE, forest_plot, load_evidence, row_label
from semmae.demo.report import Figure, Section, Table, render_html, render_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SCRIPT = ROOT / "benchmarks" / "evidence_figure.py"


def _script():
    spec = importlib.util.spec_from_file_location("evidence_figure", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("evidence_figure", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(
    not (SCRIPT.exists() and any(RESULTS.glob("campaign-*.json"))), reason="no campaign records here"
)
def test_shipped_summary_equals_the_committed_campaign_records():
    fresh = _script().summarize(RESULTS)
    assert fresh["rows"], "no campaign contrast found"
    stale = (
        f"{EVIDENCE_FILE.name} is stale: a campaign record changed; run `python benchmarks/evidence_figure.py "
        "--summary` and `python benchmarks/evidence_figure.py` (the PNG) and commit both"
    )
    shipped = load_evidence()

    def key(r):
        return (r["campaign"], r.get("arm"), r.get("baseline"), r.get("metric"))

    # a finished campaign's rows must be exactly the records'; a running one's may lag behind its newest pairs (its
    # rows carry numbers only, labelled with their pair count), but never claim more pairs or a finish
    have = {key(r): r for r in shipped["rows"]}
    assert set(have) == {key(r) for r in fresh["rows"]}, stale
    for r in fresh["rows"]:
        if r["complete"] or have[key(r)]["complete"]:
            assert have[key(r)] == r, stale
        else:
            assert have[key(r)]["n"] <= r["n"] and have[key(r)]["verdict"] is None, stale
    assert {k: v for k, v in shipped.items() if k != "rows"} == {
        k: v for k, v in fresh.items() if k != "rows"
    }, stale


def test_summary_rows_carry_a_verdict_only_when_complete():
    rows = load_evidence()["rows"]
    assert {r["campaign"] for r in rows} >= {"imagenette-p4keep", "mechanism-synth"}
    for r in rows:
        lo, hi = r["ci95"]
        assert lo <= r["mean"] <= hi and r["n"] <= r["planned"]
        if r["complete"]:
            assert r["verdict"] in {"helps", "hurts", "null", "inconclusive"}
            assert f"n = {r['n']}" in row_label(r) and r["verdict"] in row_label(r)
        else:
            assert r["verdict"] is None  # numbers only
            label = row_label(r)
            assert "interim" in label and f"{r['n']} of {r['planned']}" in label
            assert not any(w in label for w in ("helps", "hurts", "null", "inconclusive"))


def test_forest_plot_draws_every_row(tmp_path):
    path = forest_plot(load_evidence(), tmp_path / "evidence.png")
    with Image.open(path) as img:
        img.load()
        assert 640 <= img.width <= 1100 and img.height > 200  # drawn at its size in the report, not upscaled


def test_a_section_can_draw_its_figure_before_its_table(tmp_path):
    Image.new("RGB", (700, 100)).save(tmp_path / "f.png")
    fig, table = Figure("the figure", tmp_path / "f.png"), Table("the table", ["a", "b"], [["x", 1]])
    for first in (True, False):
        section = Section("s", "text", tables=[table], figures=[fig], figures_first=first)
        md = render_markdown("t", [section], tmp_path)
        page = render_html("t", [section])
        assert (md.index("the figure") < md.index("the table")) is first
        assert (page.index("the figure") < page.index("the table")) is first
