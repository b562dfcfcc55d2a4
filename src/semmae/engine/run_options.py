"""The run options every training stage spells the same way: ``--precision``, ``--resume``, ``--overwrite``.

``--precision auto|bf16|fp16|fp32`` (:mod:`semmae.engine.precision`) and ``--resume auto|none|PATH``: ``auto``
continues the run already in ``--out`` when it holds a checkpoint (a fresh start otherwise), ``none`` starts fresh
(into an empty or new folder: a folder holding a run needs ``--overwrite``), and a path continues from that
checkpoint file. The stages differ only in their defaults (the evaluation stages continue by default; pretraining
and bootstrap, whose runs are long and whose folders are precious, ask for ``--resume auto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semmae.config import logger_option, option
from semmae.errors import UserError

#: ``--precision`` (resolved by :func:`semmae.engine.precision.resolve_precision`; named here, where no torch is
#: imported, because ``semmae <verb> --help`` reads the choices)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = (
    "auto: bf16 on GPUs that have it, else fp16 + grad scaler; fp32 on the CPU (auto/fp32: TF32 on GPUs)"
)

NO_RESUME = ("", "none", "no", "false", "0")
RESUME_HELP = (
    "auto = continue the run in --out when it holds a checkpoint; none = start fresh (a folder that holds a run "
    "then needs --overwrite); or a checkpoint file to continue from"
)


OVERWRITE_HELP = (
    "delete the run already in --out and start again (a fresh run into a folder that holds a run is refused)"
)


def overwrite_option() -> Any:
    """The ``--overwrite`` field of a stage config."""
    return option(False, OVERWRITE_HELP)


CHECK_EVERY_HELP = (
    "optimiser steps between the checks all ranks make together under torchrun (a stop request, a non-finite loss); "
    "1 = after every step"
)


def check_every_option(default: int = 20) -> Any:
    """The ``--check-every`` field of an epoch stage that logs only at epoch ends (its log steps are epochs)."""
    return option(default, CHECK_EVERY_HELP)


def precision_option(default: str = "auto") -> Any:
    """The ``--precision`` field of a stage config."""
    return option(default, PRECISION_HELP, choices=PRECISIONS)


def resume_option(default: str | None) -> Any:
    """The ``--resume`` field of a stage config (``str | None``)."""
    return option(default, RESUME_HELP)


def resume_mode(resume: str | None) -> str | None:
    """``None`` (start fresh), ``"auto"``, or the path given (``none``/``no``/``false``/empty mean fresh)."""
    if resume is None or str(resume).strip().lower() in NO_RESUME:
        return None
    return "auto" if str(resume).strip().lower() == "auto" else str(resume)


def continues(cfg: Any) -> bool:
    """Whether the run asks to continue (``--resume auto`` or a path) rather than start fresh or overwrite."""
    return resume_mode(cfg.resume) is not None and not cfg.overwrite


def check_resume_overwrite(resume: str | None, overwrite: bool) -> None:
    """``--resume PATH`` continues a run and ``--overwrite`` deletes it: refuse both together. ``--resume auto``
    with ``--overwrite`` means "start again" (overwrite wins), as a default of ``auto`` must allow."""
    mode = resume_mode(resume)
    if overwrite and mode is not None and mode != "auto":
        raise UserError(f"--resume {resume} continues a run and --overwrite deletes it: pass one of them")


def need(cond: bool, msg: str) -> None:
    """Raise ``UserError(msg)`` unless ``cond`` (config validation)."""
    if not cond:
        raise UserError(msg)


@dataclass
class StepRunOptions:
    """Run options of the step-based trainers (:class:`semmae.engine.step_trainer.StepTrainer`: ``pretrain`` and
    ``bootstrap``): a subclass adds its data, model and optimisation fields and redeclares ``out``."""

    precision: str = precision_option("auto")
    compile: bool = option(False, "torch.compile the trained module")
    out: str = option("runs/train", "run directory (config, log.jsonl, tb/, checkpoints/)")
    device: str = option("auto", "auto | cpu | cuda (under torchrun each rank takes its LOCAL_RANK GPU)")
    seed: int = option(0, "random seed (augmentations and masks are a function of seed, step and index)")
    resume: str | None = resume_option(None)
    overwrite: bool = overwrite_option()
    ckpt_every: int = option(0, "also checkpoint every N optimiser steps (0: only at epoch ends)")
    keep_last: int = option(3, "keep the newest K checkpoints")
    max_steps: int | None = option(
        None, "stop after this many optimiser steps (schedules still span all epochs)"
    )
    log_every: int = option(50, "append to log.jsonl / TensorBoard every N optimiser steps")
    logger: str = logger_option()
    progress: bool = option(
        True,
        "tqdm progress bar on rank 0; --no-progress: one plain line (step, loss, img/s) per --log-every steps",
    )
    eval_every: int = option(0, "online kNN every K epochs on --eval-train / --eval-val (0: off)")
    eval_train: str | None = option(None, "kNN memory bank: labelled ImageFolder")
    eval_val: str | None = option(None, "kNN queries: labelled ImageFolder")
    knn_k: int = option(20, "neighbours of the online kNN")

    def validate_run(self) -> None:
        """Checks shared by every step-based trainer (the optimisation fields included)."""
        need(bool(self.data), "--data is required: the folder of training images")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(
            0 <= self.warmup_epochs <= self.epochs,
            f"--warmup-epochs must be in [0, epochs], got {self.warmup_epochs}",
        )
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.accum_iter >= 1, f"--accum-iter must be >= 1, got {self.accum_iter}")
        need(self.global_batch is None or self.global_batch >= 1, "--global-batch must be >= 1")
        need(self.blr > 0 and (self.lr is None or self.lr > 0), "learning rates must be > 0")
        need(all(0 <= b < 1 for b in self.betas), f"--betas must be in [0, 1), got {self.betas}")
        check_resume_overwrite(self.resume, self.overwrite)
        need(self.ckpt_every >= 0 and self.keep_last >= 1, "--ckpt-every must be >= 0 and --keep-last >= 1")
        need(self.log_every >= 1, "--log-every must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1")
        need(self.eval_every >= 0, "--eval-every must be >= 0")
        if self.eval_every:
            need(
                bool(self.eval_train and self.eval_val),
                "--eval-every needs --eval-train and --eval-val folders",
            )
