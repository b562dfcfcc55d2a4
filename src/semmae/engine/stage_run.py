"""How a stage that writes one run folder starts and ends: the process group and device, the run folder claimed
(:func:`semmae.utils.rundir.claim_run_dir`) for as long as the stage runs, and the process group torn down
whatever happens (every trainer starts here: :func:`semmae.engine.trainer.run_trainer`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from semmae.engine.run_options import continues
from semmae.utils.distributed import DistInfo, cleanup, init_distributed, resolve_device
from semmae.utils.rundir import RunDir, check_out_outside, claim_run_dir

T = TypeVar("T")


def run_claimed(
    cfg: Any,
    verb: str,
    body: Callable[[Any, DistInfo, torch.device, RunDir], T],
    *,
    resume: bool | None = None,
) -> T:
    """``body(cfg, dist_info, device, run_dir)`` inside ``cfg.out`` claimed for ``semmae <verb>``. ``resume``: whether
    the run may continue what the folder holds (default: the config's ``--resume``/``--overwrite``)."""
    try:
        info, device, run_dir = claim_stage_folder(cfg, verb, resume=resume)
        with run_dir:
            return body(cfg, info, device, run_dir)
    finally:
        cleanup()


def claim_stage_folder(
    cfg: Any, verb: str, *, resume: bool | None = None
) -> tuple[DistInfo, torch.device, RunDir]:
    """The process group, the device and ``cfg.out`` claimed for ``semmae <verb>`` (:func:`run_claimed` releases
    the folder and tears the group down; a caller of this alone does both itself)."""
    check_out_outside(cfg.out, read_folders(cfg))
    info = init_distributed(cfg.device)
    device = resolve_device(cfg.device, info)
    continuing = continues(cfg) if resume is None else resume
    run_dir = claim_run_dir(
        cfg.out,
        verb,
        resume=continuing,
        overwrite=bool(getattr(cfg, "overwrite", False)),
        enabled=info.is_main,
        inputs=command_inputs(cfg),
    )
    return info, device, run_dir


def read_folders(cfg: Any) -> dict[str, str | None]:
    """The folders a stage reads images from, by flag (``--out`` must lie outside each)."""
    names = ("data", "train", "val", "eval_train", "eval_val")
    return {"--" + n.replace("_", "-"): getattr(cfg, n, None) for n in names}


#: config fields that name something a stage reads (an image folder, a part cache, a checkpoint, masks)
INPUT_FIELDS = (
    "data", "train", "val", "eval_train", "eval_val", "parts", "train_parts", "val_parts", "cache", "masks",
    "keypoints", "checkpoint", "encoder_checkpoint", "init", "resume",
)  # fmt: skip


def command_inputs(cfg: Any) -> dict[str, str | None]:
    """Every path a stage reads, by flag (``--overwrite`` never deletes a folder that is, holds or lies inside one).
    Keywords that are not paths (``--resume auto``) are left out."""
    found: dict[str, str | None] = {}
    for name in INPUT_FIELDS:
        value = getattr(cfg, name, None)
        if (
            isinstance(value, str)
            and value
            and value not in ("auto", "none", "random")
            and "://" not in value
        ):
            found["--" + name.replace("_", "-")] = value
    return found
