"""What a run records: ``config.yaml``, ``log.jsonl`` (one JSON object per logged step) and the trackers of its
``logger`` field (:mod:`semmae.utils.trackers`); :func:`read_log` reads the log back."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.utils.io import atomic_write_text, check_may_append, note_identity, open_for_append
from semmae.utils.plain_config import config_to_dict, save_config


class RunLogger:
    """Records a run: ``config.yaml`` (resolved), one JSON object per logged step in ``log.jsonl``, and the same
    scalars, config and figures in the trackers of the config's ``logger`` field (``--logger``; default
    TensorBoard events under ``tb/``; :mod:`semmae.utils.trackers`). A non-main rank gets a logger that writes
    nothing. Verbs get theirs from :meth:`RunDir.start`, which checks the folder first."""

    def __init__(
        self,
        out_dir: str | Path,
        config: Any | None = None,
        enabled: bool = True,
        tensorboard: bool = True,
        purge_step: int | None = None,
    ):
        from semmae.utils.trackers import open_trackers, parse_trackers

        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._trackers: list[Any] = []
        if not enabled:
            return
        names = parse_trackers(getattr(config, "logger", "tensorboard")) if tensorboard else ()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {self.out_dir}: {e.strerror or e}") from None
        plain = None
        if config is not None:
            save_config(config, self.out_dir / "config.yaml")
            plain = config_to_dict(config) if is_dataclass(config) else dict(config)
        self._trackers = open_trackers(names, self.out_dir, plain, purge_step)
        self._log_path = self.out_dir / "log.jsonl"

    @staticmethod
    def entries(config: Any | None, tensorboard: bool = True) -> list[str]:
        """The top-level names a logger for ``config`` writes in its folder: the config, the log and each
        tracker's files (the run folder lists them in its owner marker before the logger writes them)."""
        from semmae.utils.trackers import parse_trackers, tracker_entries

        names = parse_trackers(getattr(config, "logger", "tensorboard")) if tensorboard else ()
        return [*(["config.yaml"] if config is not None else []), "log.jsonl", *tracker_entries(names)]

    @staticmethod
    def kept_entries(config: Any | None, tensorboard: bool = True) -> list[str]:
        """Of :meth:`entries`, the trackers' own stores (``wandb/``, ``mlflow.db``), which ``--overwrite`` keeps:
        the tracker library writes them file by file, and a new run is a new tracker run beside the old one."""
        from semmae.utils.trackers import parse_trackers, tracker_kept

        names = parse_trackers(getattr(config, "logger", "tensorboard")) if tensorboard else ()
        return tracker_kept(names)

    def log(self, step: int, **values: Any) -> None:
        """Append one record ``{"step": step, **values, "time": ...}`` and write numeric values to TensorBoard."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}, "time": time.time()}
        try:
            line = json.dumps(record) + "\n"
            if not os.path.lexists(self._log_path):  # made whole, its identity recorded before it is in place
                atomic_write_text(self._log_path, line, appended=True)
            elif os.lstat(self._log_path).st_nlink > 1:
                # hard-linked (a `cp -al` snapshot of the run): written anew, so the other name keeps its bytes
                check_may_append(self._log_path)
                old = self._log_path.read_text(errors="surrogateescape")
                atomic_write_text(self._log_path, old + line, appended=True)
            else:
                check_may_append(self._log_path)  # never appends to a log.jsonl of yours
                with open_for_append(self._log_path) as fh:
                    fh.write(line)
                note_identity(self._log_path, appended=True)  # recorded again only if its first bytes changed
        except OSError as e:
            raise UserError(f"cannot append to {self._log_path}: {e.strerror or e}") from None
        scalars = {
            k: v
            for k, v in record.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v)
        }
        for tracker in self._trackers:
            tracker.scalars(int(step), scalars)

    def add_image(self, tag: str, image_chw: Any, step: int) -> None:
        """A figure ``[C, H, W]`` (uint8, or float in [0, 1]) for every tracker."""
        if self.enabled:
            for tracker in self._trackers:
                tracker.image(tag, image_chw, int(step))

    def close(self) -> None:
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.close()


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
