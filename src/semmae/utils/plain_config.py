"""A config dataclass as plain data (lists for tuples): safe for YAML, JSON and ``torch.load(weights_only=True)``;
and its YAML file (``config.yaml`` of a run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view (lists for tuples) - safe for YAML, JSON and ``torch.load(weights_only=True)``."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically, fields in their declared order."""
    import yaml

    from semmae.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
