"""Done-files of a chained pipeline (the demo, the reproduction harness, the campaigns): ``<folder>/stages/<name>.json`` records that a stage finished (its seconds and
what it made), so a rerun into the same folder skips it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semmae.utils.io import atomic_write_json


class StageMarks:
    """The done-files under ``folder/stages``."""

    def __init__(self, folder: str | Path):
        self.dir = Path(folder) / "stages"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        """The record of a finished stage; None if there is none (or it is not valid JSON)."""
        try:
            return json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None

    def write(self, name: str, record: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path(name), record)

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record, by stage name (sorted)."""
        found = {p.stem: self.read(p.stem) for p in sorted(self.dir.glob("*.json"))}
        return {k: v for k, v in found.items() if v is not None}

    def seconds(self) -> dict[str, float]:
        """Each finished stage's wall time (records without one are left out)."""
        return {k: float(r["seconds"]) for k, r in self.records().items() if "seconds" in r}

    def read_any(self, name: str, was: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The record of a finished stage under ``name``, else under the first of its former names ``was`` that
        has one (a folder written before the stage was renamed still resumes); None if there is none."""
        for key in (name, *was):
            rec = self.read(key)
            if rec is not None:
                return rec
        return None

    def once(
        self, name: str, fn: Callable[[], Any], log: Callable[[str], None] = print, was: tuple[str, ...] = ()
    ) -> tuple[Any, float]:
        """``fn()``'s result and seconds: run and recorded (``{"seconds", "result"}``) the first time, read back
        from the record after (``result`` must be plain JSON data; a record under a former name ``was`` counts)."""
        rec = next((r for r in map(self.read, (name, *was)) if r is not None and "result" in r), None)
        if rec is not None:
            return rec["result"], float(rec.get("seconds", 0.0))
        log(f"stage {name} ...")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.write(name, {"seconds": seconds, "result": result})
        log(f"stage {name} done in {seconds:.0f} s")
        return result, seconds
