"""The one runner of chained stages - the demo (:mod:`semmae.demo.pipeline`), the reproduction harness and the
campaigns (``benchmarks/semmae_lab``) - and its done-files.

A :class:`Stage` is a name, the function that does its work, its former names and how a finished one is recognised.
:class:`StageRunner` runs stages, one at a time or an ordered list, in a run folder: a stage whose done-file
``<folder>/stages/<name>.json`` (:class:`StageMarks`) is valid is skipped and its result read back, any other runs
and gets one. A done-file holds the stage's seconds and what it made, in one of two forms:

* ``{"seconds", "result"}`` - the stage's result, plain JSON data (a checkpoint path, the paths of a data split),
  handed back on a rerun (the harness's and the campaigns' stages);
* ``{"stage", "seconds", "artifacts"}`` - the files the stage made (:attr:`Stage.artifacts`), each checked with
  :func:`verify_artifact` on a rerun: one missing, empty or not decoding runs the stage again (the demo's stages).

A done-file under a former name (:attr:`Stage.was`, a folder written before the stage was renamed) counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semmae.errors import UserError
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


def verify_artifact(path: Path) -> str | None:
    """None if ``path`` is a usable artifact, else why not (missing, empty, an image that does not decode)."""
    if not path.exists():
        return "is missing"
    if path.is_dir():
        return None if any(path.iterdir()) else "is an empty folder"
    if path.stat().st_size == 0:
        return "is an empty file"
    if path.suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as e:  # noqa: BLE001
            return f"does not decode ({e})"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as e:
            return f"is not valid JSON ({e})"
    return None


@dataclass(frozen=True)
class Stage:
    """One stage of a chain.

    ``run`` does the work and returns its result: plain JSON data, or with ``artifacts`` the files it made.
    ``title``: what it does (the demo's progress lines); ``was``: its former names, whose done-files still count;
    ``always``: run every time (a cheap stage that summarises the others: the demo's report)."""

    name: str
    run: Callable[[], Any]
    title: str = ""
    was: tuple[str, ...] = ()
    always: bool = False
    artifacts: bool = False


class StageRunner:
    """Runs stages in ``folder`` with their done-files (:class:`StageMarks`): a finished stage is skipped, any other
    runs and is recorded. ``seconds``: each stage's wall time, in the order they ran or were skipped (a skipped one's
    from its done-file). ``label`` names the chain in its lines (``[demo 3/7] parts: ...``)."""

    def __init__(self, folder: str | Path, log: Callable[[str], None] | None = None, label: str = ""):
        self.marks = StageMarks(folder)
        self.log = log or (lambda line: print(line, flush=True))
        self.label = label
        self.seconds: dict[str, float] = {}

    def finished(self, stage: Stage) -> dict[str, Any] | None:
        """The done-file of ``stage`` if it counts, else None: the first of its name and former names that holds
        the stage's result, and, for ``artifacts``, whose files all still verify."""
        field = "artifacts" if stage.artifacts else "result"
        found = (self.marks.read(name) for name in (stage.name, *stage.was))
        record = next((r for r in found if r is not None and field in r), None)
        if record is None or not stage.artifacts:
            return record
        for p in record["artifacts"]:
            why = verify_artifact(Path(p))
            if why:
                where = f"[{self.label}] " if self.label else ""
                self.log(f"{where}stage {stage.name}: artifact {p} {why}; running the stage again")
                return None
        return record

    def run(self, stage: Stage, head: str = "") -> Any:
        """``stage``'s result: read back from its done-file when it finished before (and is not ``always``), else
        from running it, timed and recorded. A failure names the stage (a :class:`UserError` stays one)."""
        head = head or f"stage {stage.name}"
        record = None if stage.always else self.finished(stage)
        if record is not None:
            self.seconds[stage.name] = float(record.get("seconds", 0.0))
            self.log(f"{head} - done already, skipped")
            return [Path(p) for p in record["artifacts"]] if stage.artifacts else record["result"]
        self.log(f"{head} ...")
        t0 = time.perf_counter()
        try:
            result = stage.run()
        except UserError as e:
            raise UserError(f"stage '{stage.name}' failed: {e}") from None
        except Exception as e:
            raise RuntimeError(f"stage '{stage.name}' failed: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - t0
        self.seconds[stage.name] = seconds
        if stage.artifacts:
            record = {"stage": stage.name, "seconds": seconds, "artifacts": [str(p) for p in result]}
        else:
            record = {"seconds": seconds, "result": result}
        self.marks.write(stage.name, record)
        self.log(f"{head} - done in {seconds:.0f} s")
        return result

    def run_all(self, stages: Sequence[Stage]) -> dict[str, Any]:
        """Every stage in order (:meth:`run`); their results by name."""
        results = {}
        for i, stage in enumerate(stages, 1):
            head = f"[{self.label} {i}/{len(stages)}] {stage.name}: {stage.title}"
            results[stage.name] = self.run(stage, head)
        return results
