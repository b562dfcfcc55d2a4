"""``semmae_lab.results_table``: benchmark rows and their markdown tables."""

from __future__ import annotations

from semmae_lab.results_table import cell, machine_description, markdown_table, row


def test_row_has_run_alls_keys():
    assert row("step", 1.5, "ms") == {"name": "step", "value": 1.5, "unit": "ms", "target": ""}


def test_markdown_table_formats_floats_to_significant_digits():
    table = markdown_table(["a", "b"], [["x", 1 / 3], [2, "y"]], digits=3)
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x | 0.333 |", "| 2 | y |"]
    assert cell(123456.0) == "1.235e+05" and cell(True) == "True"


def test_machine_description_names_torch_and_threads():
    import torch

    text = machine_description()
    assert f"torch {torch.__version__}" in text and f"{torch.get_num_threads()} torch threads" in text
