"""``benchmarks/masking_anatomy.py``: exact part counts of a hand-made mask, and a run on a small cache."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from semmae.data.part_cache import PartCache

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _tool():
    spec = importlib.util.spec_from_file_location("masking_anatomy", BENCH / "masking_anatomy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["masking_anatomy"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_anatomy_counts_parts_hidden_whole_and_left_visible():
    tool = _tool()
    # parts 0 and 1, id 2 = no part; image 0: part 0 masked whole, one cell of part 1 visible, 2 background
    # cells visible; image 1: nothing masked
    ids = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 2]])
    mask = torch.tensor([[True, True, False, True, False, False], [False] * 6])
    a = tool.anatomy(ids, mask, no_part=2)
    assert a["parts present"] == 2.0
    assert a["hidden whole"] == 0.5  # (1 + 0) / 2
    assert a["left visible"] == 1.5  # (1 + 2) / 2
    assert abs(a["largest visible share"] - (2 / 3 + 4 / 6) / 2) < 1e-6


def test_whole_part_masking_hides_more_parts_whole_than_per_part_masking(tmp_path, capsys):
    tool = _tool()
    grid, parts, n = 8, 4, 64
    g = torch.Generator().manual_seed(0)
    writer = PartCache.create(tmp_path / "c.cache", [f"x/{i}.png" for i in range(n)], grid, parts)
    # four quadrant parts and a background border, the same layout on every image
    ids = torch.full((grid, grid), parts)
    ids[1:4, 1:4], ids[1:4, 4:7], ids[4:7, 1:4], ids[4:7, 4:7] = 0, 1, 2, 3
    writer.write(0, ids.expand(n, grid, grid).clone(), torch.rand(n, grid, grid, generator=g))
    writer.finalize()
    out = tmp_path / "anatomy.md"
    assert tool.main([str(tmp_path / "c.cache"), "--images", "32", "--out", str(out)]) == 0
    rows = [r.split("|")[1:-1] for r in out.read_text().splitlines() if r.startswith("| c.cache")]
    hidden = {(r[1].strip(), r[2].strip()): float(r[5]) for r in rows}
    assert hidden[("adaptive", "1")] > hidden[("adaptive", "0")]
    assert len(rows) == 1 + len(tool.PROGRESS)
    assert "hidden whole" in capsys.readouterr().out
