"""A run directory: resolved config, ``log.jsonl`` and TensorBoard events, written by rank 0 only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from semmae.config import save_config
from semmae.errors import UserError


class RunLogger:
    """Records a run: ``config.yaml`` (resolved), one JSON object per logged step in ``log.jsonl``, and the same
    scalars as TensorBoard events under ``tb/``. A non-main rank gets a logger that writes nothing."""

    def __init__(
        self, out_dir: str | Path, config: Any | None = None, enabled: bool = True, tensorboard: bool = True
    ):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {self.out_dir}: {e.strerror or e}") from None
        if config is not None:
            save_config(config, self.out_dir / "config.yaml")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))
        self._log_path = self.out_dir / "log.jsonl"

    def log(self, step: int, **values: Any) -> None:
        """Append one record ``{"step": step, **values, "time": ...}`` and write numeric values to TensorBoard."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}, "time": time.time()}
        try:
            with open(self._log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as e:
            raise UserError(f"cannot append to {self._log_path}: {e.strerror or e}") from None
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def add_image(self, tag: str, image_chw: Any, step: int) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image_chw, int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            pass
    return v


def read_log(path: str | Path) -> list[dict]:
    """Read a ``log.jsonl`` back as a list of dicts."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
