"""Pretraining checkpoints: plain data, atomic writes, a ``latest`` pointer and keep-last-K.

Layout of a checkpoint (every entry loads with ``torch.load(weights_only=True)``)::

    {"model": MAE state dict, "model_config": {"name", "img_size", "patch_size", "embed_dim", ...},
     "optimizer": ..., "scaler": ..., "epoch": int, "step": int (optimiser steps done),
     "config": PretrainConfig as a dict, "rng": [per-rank RNG states], "sampler": {"epoch", "step_in_epoch"}}

Files live in ``<out>/checkpoints/ckpt-<step>.pth``; ``<out>/checkpoints/latest`` holds the newest file's name
and is replaced atomically after the checkpoint itself is on disk, so it never names a half-written file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.utils.io import (  # noqa: F401 - checkpoint_file: the one reading of "a file or a run folder"
    atomic_torch_save,
    atomic_write_text,
    checkpoint_file,
    latest_step_checkpoint,
    load_checkpoint,
    step_checkpoints,
)

REQUIRED_KEYS = ("model", "model_config", "optimizer", "scaler", "epoch", "step", "config", "rng", "sampler")


class CheckpointManager:
    """Writes and finds a run's checkpoints under ``<out>/checkpoints``."""

    def __init__(self, out_dir: str | Path, keep_last: int = 3):
        self.dir = Path(out_dir) / "checkpoints"
        self.keep_last = int(keep_last)

    def path_for(self, step: int) -> Path:
        return self.dir / f"ckpt-{step:09d}.pth"

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically, move the ``latest`` pointer, then drop all but the newest K."""
        path = self.path_for(int(state["step"]))
        atomic_torch_save(state, path)
        atomic_write_text(self.dir / "latest", path.name + "\n")
        for old in self.list()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def list(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        return step_checkpoints(self.dir)

    def latest(self) -> Path | None:
        """The file ``latest`` names, else the newest ``ckpt-*.pth``, else ``None``."""
        return latest_step_checkpoint(self.dir)


def resolve_resume(resume: str | None, out_dir: str | Path) -> Path | None:
    """``None`` -> start fresh; ``auto`` -> the run directory's latest checkpoint (or fresh when there is none);
    a path -> that file (a run directory is also accepted and means its latest checkpoint)."""
    if not resume:
        return None
    if resume == "auto":
        return CheckpointManager(out_dir).latest()
    path = checkpoint_file(resume)
    if not path.is_file():
        raise UserError(f"--resume {resume}: no such checkpoint file")
    return path


def load_newest_loadable(
    out_dir: str | Path, say=print, verb: str = "pretrain"
) -> tuple[Path, dict[str, Any]] | None:
    """``--resume auto``: the newest checkpoint of a run that loads (``latest`` first, then the others newest
    first), saying which ones were skipped and why; ``None`` when the run has none. A run whose checkpoints all
    fail to load is a UserError (starting over silently would discard it)."""
    mgr = CheckpointManager(out_dir)
    first = mgr.latest()
    if first is None:
        return None
    order = [first, *[p for p in reversed(mgr.list()) if p != first]]
    problems = []
    for path in order:
        try:
            return path, load_pretrain_checkpoint(path)
        except UserError as e:
            problems.append(str(e))
            say(f"semmae {verb}: --resume auto: skipped {path.name}: {e}")
    raise UserError(
        f"--resume auto: none of the {len(order)} checkpoint(s) in {mgr.dir} loads (newest: {problems[0]}); "
        "pass --overwrite to start again"
    )


def load_resume(
    resume: str | None, out_dir: str | Path, say=print, verb: str = "pretrain"
) -> tuple[Path, dict[str, Any]] | None:
    """What a training verb resumes from: ``(path, checkpoint)``, or None to start fresh. ``auto`` takes the newest
    checkpoint that loads (:func:`load_newest_loadable`); a path is loaded as given (:func:`resolve_resume`)."""
    if resume == "auto":
        return load_newest_loadable(out_dir, say, verb)
    path = resolve_resume(resume, out_dir)
    return None if path is None else (path, load_pretrain_checkpoint(path))


def restore(path: str | Path, **modules: Any) -> dict[str, Any]:
    """Load a stage's checkpoint file and its entries into ``modules`` (``model=net, optimizer=opt``: each gets
    ``ckpt[name]`` via ``load_state_dict``); a UserError names the file when one does not fit. Returns the whole
    checkpoint for the caller's own entries (epoch, metrics, RNG state)."""
    ckpt = load_checkpoint(path)
    try:
        for name, module in modules.items():
            module.load_state_dict(ckpt[name])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserError(
            f"cannot resume from {path}: it does not match this run ({mismatch(e)}); "
            "use another --out or --overwrite"
        ) from None
    return ckpt


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


def load_pretrain_checkpoint(path: str | Path, ckpt: Any = None) -> dict[str, Any]:
    """Load (weights_only; or take ``ckpt``, already loaded from ``path``) and check that every key a resume needs
    is there."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(
            f"checkpoint {path} is not a semmae pretraining checkpoint (missing: {', '.join(missing)})"
        )
    return ckpt
