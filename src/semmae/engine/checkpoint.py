"""Checkpoints of every training stage: two keeping policies and one resume resolver. The layout is
:class:`semmae.models.checkpoint_schema.TrainState` (the one schema, its key names, the upgrade of older files;
it sits in ``models`` because the encoder loader reads pretrain checkpoints too).

Keeping policies (:class:`CheckpointManager`): keep-last-K by step (``<out>/checkpoints/ckpt-<step>.pth`` plus a
``latest`` pointer replaced after the file is on disk), or one file (``<out>/checkpoint.pth``, replaced atomically).
A stage may keep one best file beside it (``finetune``'s ``best.pth``). :func:`find_resume` is the one reading of
``--resume auto|none|PATH`` for every stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semmae.engine.run_options import resume_mode
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState, check_pretrain, read_train_state, verb_of
from semmae.utils.io import (
    atomic_torch_save,
    atomic_write_text,
    forget_written,
    latest_step_checkpoint,
    load_checkpoint,
    step_checkpoints,
)
from semmae.utils.rundir import recorded_by_its_run


class CheckpointManager:
    """Where a run's checkpoints go and which one is the newest. ``keep_last=K``: ``checkpoints/ckpt-<step>.pth``,
    the newest K kept; ``single=NAME``: the one file ``<out>/NAME``, replaced by each save."""

    def __init__(self, out_dir: str | Path, keep_last: int = 3, single: str | None = None):
        self.out = Path(out_dir)
        self.single = single
        self.dir = self.out if single else self.out / "checkpoints"
        self.keep_last = 1 if single else int(keep_last)
        self._saved: set[Path] = set()  # what this manager wrote (where the run's marker cannot tell)

    def path_for(self, step: int) -> Path:
        return self.dir / self.single if self.single else self.dir / f"ckpt-{step:09d}.pth"

    def save(self, state: TrainState) -> Path:
        """Write ``state`` atomically (then move the ``latest`` pointer and drop all but the newest K)."""
        path = self.path_for(int(state.step or 0))
        atomic_torch_save(state.to_dict(), path)
        if not self.single:
            atomic_write_text(self.dir / "latest", path.name + "\n")
            self._saved.add(path)
            for old in self._own()[: -self.keep_last]:
                old.unlink(missing_ok=True)
                forget_written(old)
        return path

    def _own(self) -> list[Path]:
        """The checkpoints the run wrote, oldest first: those its owner marker records, or (a marker from before
        files were recorded, or no run folder held) those this manager saved; a user's copy in ``checkpoints/``
        named like one is never among them."""
        found = []
        for p in self.list():
            recorded = recorded_by_its_run(p)
            if recorded or (recorded is None and p in self._saved):
                found.append(p)
        return found

    def list(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if self.single:
            return [self.dir / self.single] if (self.dir / self.single).is_file() else []
        return step_checkpoints(self.dir)

    def latest(self) -> Path | None:
        """The newest checkpoint (step files: the one ``latest`` names, else the newest), else ``None``."""
        if self.single:
            found = self.list()
            return found[0] if found else None
        return latest_step_checkpoint(self.dir)

    def in_folder(self, folder: Path) -> Path:
        """What a run folder given to ``--resume`` means under this policy: its newest checkpoint of this kind."""
        other = CheckpointManager(folder, self.keep_last, self.single)
        if not self.single and folder.name == "checkpoints":
            other = CheckpointManager(folder.parent, self.keep_last)
        return other.latest() or other.path_for(0)


def resume_path(resume: str | None, ckpts: CheckpointManager) -> Path | None:
    """``--resume`` -> the file to continue from: ``None`` (start fresh; also ``auto`` in a run without a
    checkpoint), the run's newest checkpoint (``auto``), or a path (a run folder: its newest checkpoint)."""
    mode = resume_mode(resume)
    if mode is None:
        return None
    if mode == "auto":
        return ckpts.latest()
    path = Path(mode)
    path = ckpts.in_folder(path) if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"--resume {resume}: no such checkpoint file")
    return path


def find_resume(
    resume: str | None,
    ckpts: CheckpointManager,
    kind: str,
    say: Callable[[str], None] = print,
) -> tuple[Path, TrainState] | None:
    """What a stage of ``kind`` resumes from: ``(path, checkpoint)``, or None to start fresh. ``auto`` takes the
    newest checkpoint that loads (the others newest first, saying which were skipped and why; a run whose
    checkpoints all fail is a UserError: starting over silently would discard it); a path is loaded as given."""
    if resume_mode(resume) != "auto":
        path = resume_path(resume, ckpts)
        return None if path is None else (path, read_stage_checkpoint(path, kind))
    first = ckpts.latest()
    if first is None:
        return None
    order = [first, *[p for p in reversed(ckpts.list()) if p != first]]
    problems = []
    for path in order:
        try:
            return path, read_stage_checkpoint(path, kind)
        except UserError as e:
            problems.append(str(e))
            say(f"semmae {verb_of(kind)}: --resume auto: skipped {path.name}: {e}")
    raise UserError(
        f"--resume auto: none of the {len(order)} checkpoint(s) in {ckpts.dir} loads (newest: {problems[0]}); "
        "pass --overwrite to start again"
    )


def read_stage_checkpoint(path: str | Path, kind: str) -> TrainState:
    """Load ``path`` and check that it is a checkpoint ``semmae <kind>`` resumes from
    (:func:`~semmae.models.checkpoint_schema.read_train_state`: older layouts are upgraded on read)."""
    return read_train_state(path, expect_kind=kind)


def load_states(path: str | Path, ckpt: TrainState | dict[str, Any], **modules: Any) -> None:
    """Load the field ``name`` of ``ckpt`` into each of ``modules`` (``model=net, optimizer=opt``:
    ``load_state_dict``); a UserError names the file when one does not fit."""
    state = ckpt if isinstance(ckpt, TrainState) else TrainState.from_dict(ckpt, str(path))
    try:
        for name, module in modules.items():
            value = getattr(state, name)
            if value is None:
                raise KeyError(name)
            module.load_state_dict(value)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserError(
            f"cannot resume from {path}: it does not match this run ({mismatch(e)}); "
            "use another --out or --overwrite"
        ) from None


def mismatch(e: BaseException, shown: int = 3) -> str:
    """One line saying how a state dict did not fit: ``load_state_dict``'s missing and unexpected keys and shape
    mismatches (``shown`` of each kind, then a count), or the first line of any other error."""
    text = str(e).strip()
    if not text.startswith("Error(s) in loading state_dict"):
        return text.splitlines()[0] if text else type(e).__name__
    parts = []
    for label, pattern in (
        ("missing", r"Missing key\(s\) in state_dict: (.*)"),
        ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)"),
    ):
        found = re.search(pattern, text)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
            parts.append(f"{label} {len(keys)} key(s): {', '.join(keys[:shown])}{more}")
    sizes = re.findall(
        r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^]]*\])\) from checkpoint, "
        r"the shape in current model is torch\.Size\((\[[^]]*\])\)",
        text,
    )
    for name, theirs, ours in sizes[:shown]:
        parts.append(f"{name} is {theirs} in the checkpoint, {ours} in the model")
    if len(sizes) > shown:
        parts.append(f"+{len(sizes) - shown} more shape mismatch(es)")
    return "; ".join(parts) or text.splitlines()[0]


def load_pretrain_checkpoint(path: str | Path, ckpt: Any = None) -> TrainState:
    """Load (weights_only; or take ``ckpt``, already loaded from ``path``) and check that every entry a step
    stage's resume (and ``semmae export``) needs is there."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    check_pretrain(ckpt, str(path))
    return TrainState.from_dict(ckpt, f"checkpoint {path}")
