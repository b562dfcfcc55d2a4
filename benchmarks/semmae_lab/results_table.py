"""Benchmark results as rows ``{name, value, unit, target}`` (what every ``benchmarks/bench_*.py`` ``run`` returns
to ``benchmarks/run_all.py``), markdown tables of them, and one line describing the machine they were measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def row(name: str, value: Any, unit: str = "", target: Any = "") -> dict[str, Any]:
    """One measured figure: ``target`` is a string such as ``">= 0.97"`` (or ``""``: reported, not judged)."""
    return {"name": name, "value": value, "unit": unit, "target": target}


def cell(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, anything else as ``str``."""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown_table(header: list[str], rows: list[list[Any]], digits: int = 4) -> str:
    """A markdown table of ``rows`` (one list of cells each, as long as ``header``) under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(cell(v, digits) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model, cores, GPU, Python, torch and its thread count, in one line."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )
