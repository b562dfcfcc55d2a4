"""The one trainer every training stage runs on (issues 27 and 41): one optimiser step, and one run skeleton.

:class:`Trainer` owns the optimiser step and the run around it. Its public :meth:`Trainer.train_step` is one
optimiser step on one batch: the step's learning rate (and weight decay, where the stage has a schedule for it) from
per-step arrays, the stage's :meth:`~Trainer.forward` hook (its losses, under the run's precision), the
:class:`LossScaler` (backward, unscale, clip, step: the only place in semmae that calls ``backward``), zeroed
gradients, the :meth:`~Trainer.end_step` hook (an EMA, a teacher) and the non-finite watch
(:mod:`semmae.engine.nonfinite`). Its :meth:`~Trainer.run` is the one skeleton: set-up, the resume (found once,
on rank 0: :func:`semmae.engine.checkpoint.find_resume`), epochs until the end, the checkpoints
(:class:`~semmae.models.checkpoint_schema.TrainState`) and the stop.

Two loops run on it and differ only in how they iterate: :class:`semmae.engine.step_trainer.StepTrainer` (pretrain,
bootstrap) and :class:`semmae.engine.epoch_trainer.EpochTrainer` (parts train, finetune, the full linear probe,
segment train).

Both stop on SIGTERM at a step boundary with a checkpoint there and exit 130 (:mod:`semmae.engine.termination`),
also when a scheduler signals the whole process group and the loader's workers die of it (a step is taken whole or
not at all: a worker's death is looked at between steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from semmae.engine.checkpoint import CheckpointManager, find_resume, load_states, read_stage_checkpoint
from semmae.engine.nonfinite import NonFiniteWatch, kept_checkpoint
from semmae.engine.precision import Precision, resolve_precision
from semmae.engine.run_options import continues
from semmae.engine.schedule import set_lr, set_weight_decay
from semmae.engine.termination import sigterm_requests, stopped
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_record import EncoderRecord
from semmae.utils import distributed as du
from semmae.utils.plain_config import config_to_dict
from semmae.utils.run_logger import RunLogger
from semmae.utils.rundir import RunDir
from semmae.utils.seed import seed_everything


class LossScaler:
    """Backward + (unscale) + optional clipping + optimiser step, with a grad scaler only for fp16.

    ``scaler(loss, optimizer, parameters, clip_grad, update)`` runs ``backward``; when ``update`` is true (the
    last micro-batch of a gradient-accumulation cycle) it also clips, steps and zeroes nothing (the caller zeroes
    gradients). Returns the total gradient norm (before clipping) on update steps, else ``None``. Its
    ``state_dict`` lets a resumed fp16 run continue with the same loss scale.
    """

    def __init__(self, precision: Precision):
        self.precision = precision
        self._scaler = torch.amp.GradScaler(precision.device_type) if precision.needs_grad_scaler else None

    @property
    def enabled(self) -> bool:
        return self._scaler is not None

    def __call__(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[torch.nn.Parameter] | Callable[[], Iterable[torch.nn.Parameter]],
        clip_grad: float | None = None,
        update: bool = True,
    ) -> torch.Tensor | None:
        (self._scaler.scale(loss) if self._scaler is not None else loss).backward()
        if not update:
            return None
        if self._scaler is not None:
            self._scaler.unscale_(optimizer)
        params = [p for p in (parameters() if callable(parameters) else parameters) if p.grad is not None]
        if clip_grad is not None and clip_grad > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
        else:  # only measured: a clip at an infinite norm would scale every gradient by NaN once one is non-finite
            norm = total_grad_norm(params)
        if self._scaler is not None:
            self._scaler.step(optimizer)
            self._scaler.update()
        else:
            optimizer.step()
        return norm

    def state_dict(self) -> dict:
        """Plain data: ``{}`` without a grad scaler, else the scaler's scale and growth tracker."""
        return dict(self._scaler.state_dict()) if self._scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self._scaler is not None and state:
            self._scaler.load_state_dict(state)


def total_grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The 2-norm of all gradients together, as ``clip_grad_norm_`` computes it, without touching them."""
    if not params:
        return torch.zeros(())
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm([p.grad for p in params], 2.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad, 2.0) for p in params]), 2.0)


def gradient_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters) -> torch.Tensor:
    """One float32 optimiser step outside a run (the fast linear probe's heads on cached features): backward and
    step without a grad scaler or clipping; the caller zeroes the gradients. Returns the gradient norm."""
    return LossScaler(Precision("fp32", "cpu"))(loss, optimizer, parameters)


class Trainer:
    """One training run: the optimiser step (:meth:`train_step`), and the run around it - set-up, resume,
    checkpoints, the SIGTERM stop - that every stage shares (issue 41: one loop skeleton).

    :meth:`run` is the skeleton: :meth:`setup` (seed, find the resume checkpoint, :meth:`build`, the loop's own
    pieces, load the checkpoint, start the run folder), then :meth:`train_epoch` until :meth:`steps_to_run`, then
    :meth:`end_run`. :meth:`checkpoint` writes one :class:`~semmae.models.checkpoint_schema.TrainState` and
    :meth:`stop` ends a run stopped by SIGTERM. The two loops differ only in how they iterate (their
    :meth:`train_epoch`, :meth:`position`, :meth:`restore_position` and checkpoint policy):

    * :class:`semmae.engine.step_trainer.StepTrainer` - pretrain, bootstrap: step-indexed sampling, gradient
      accumulation, keep-last-K checkpoints by step;
    * :class:`semmae.engine.epoch_trainer.EpochTrainer` - parts train, finetune, the full linear probe, segment
      train: epochs over a loader, one ``checkpoint.pth``.

    The stage hooks, one set for both loops: :meth:`build` (data, model, optimiser, schedules: it sets
    ``model_core``, ``optimizer``, ``lr_schedule``, optionally ``wd_schedule``), :meth:`forward` (one batch's
    losses), :meth:`begin_step` / :meth:`end_step` / :meth:`after_step`, :meth:`epoch_end`, :meth:`explain`,
    :meth:`model_state` / :meth:`load_model_state` / :meth:`load_optimizer_state`, :meth:`encoder_record`,
    :meth:`checkpoint_extras`, :meth:`keep_log_until`, :meth:`begin_run` / :meth:`end_run`, :meth:`stop_place`.
    A stage is run by :func:`run_trainer` (``semmae <verb>``) or, outside the CLI, :func:`open_trainer`.
    """

    verb = "train"  # the CLI verb, in messages and the run folder's claim
    kind = "train"  # the checkpoint's ``kind``
    wd_schedule = None  # per-step weight decay (bootstrap), or None
    may_change: tuple[str, ...] = ()  # config fields a continued run may change (more epochs)

    def __init__(self, cfg: Any, dist: du.DistInfo, device: torch.device, run_dir: RunDir):
        self.cfg, self.dist, self.device, self.run_dir = cfg, dist, device, run_dir
        self.is_main = dist.is_main
        self.precision = resolve_precision(cfg.precision, device)
        self.ckpts = self.checkpoint_manager()
        self.step = self.epoch = 0
        self.resumed_from: Path | None = None
        self.resumed: TrainState | None = None  # the checkpoint the run continues (read before build)
        self._saved_step = -1  # the step of the newest checkpoint on disk (written or resumed from)
        self._cut = False  # the data ended inside a step: a stop keeps the last checkpoint (StepTrainer)
        self._set_up = False

    @classmethod
    def preflight(cls, cfg: Any) -> None:
        """Checks that need neither data nor device: they fail before the run folder is claimed."""

    # ------------------------------------------------------------------------------------------ stage hooks
    def build(self) -> None:
        raise NotImplementedError

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """One batch's losses (``"loss"``: what is minimised, float32), the forward under the run's precision.
        ``self.step`` is the optimiser step it belongs to."""
        raise NotImplementedError

    def begin_step(self, step: int) -> None:
        """Before the forward of optimiser step ``step`` (its learning rate is set already)."""

    def end_step(self, step: int) -> None:
        """After optimiser step ``step`` (an EMA of the weights, a teacher's update)."""

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """After each optimiser step, its losses in hand (logging, a periodic evaluation or checkpoint)."""

    def epoch_end(self, epoch: int) -> None:
        """After epoch ``epoch`` (0-based) ended: evaluation, logging, a panel."""

    def explain(self, step: int) -> str:
        """The message of a non-finite loss first seen at ``step``."""
        return f"the loss became non-finite at step {step}; {self.kept()}"

    def model_state(self) -> TrainState:
        """The checkpoint's model part: at least ``model`` (a stage's other weights in ``extra``)."""
        return TrainState(model=self.model_core.state_dict())

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        """Load :meth:`model_state`'s entries back (a UserError when they do not fit this run)."""
        load_states(path, ckpt, model=self.model_core)

    def load_optimizer_state(self, path: Path, ckpt: TrainState) -> None:
        load_states(path, ckpt, optimizer=self.optimizer)

    def encoder_record(self) -> EncoderRecord | None:
        """The stage's encoder, where :meth:`model_state` does not give one (None: none)."""
        return None

    def checkpoint_extras(self) -> dict[str, Any]:
        """The stage's own checkpoint entries."""
        return {}

    def keep_log_until(self) -> int:
        """A continued run drops its log's records after this step (default: the optimiser step)."""
        return self.step

    def begin_run(self) -> None:
        """After the run folder started, before the first step (a start record)."""

    def end_run(self) -> Any:
        """After the last step; what :meth:`run` returns."""
        return None

    def stop_place(self) -> str:
        """Where a stopped run stopped, for its last line."""
        return f"step {self.step}"

    # ------------------------------------------------------------------------------------------- loop hooks
    def checkpoint_manager(self) -> CheckpointManager:
        """Where this loop keeps its checkpoints."""
        raise NotImplementedError

    def setup_loop(self) -> None:
        """The loop's own pieces, after :meth:`build` and before a checkpoint is loaded (samplers, loaders)."""

    def step_inputs(self, batch: Any) -> Any:
        """A batch as its loader gives it -> what :meth:`forward` takes, in :meth:`train_step` (identity;
        :class:`~semmae.engine.step_trainer.StepTrainer`: its ``prepare``, as its loop does)."""
        return batch

    def steps_to_run(self) -> int:
        """The step :meth:`run` trains up to."""
        return self.total_steps

    def train_epoch(self) -> None:
        """Steps until the end of the current epoch (or the run, or a stop)."""
        raise NotImplementedError

    def position(self) -> TrainState:
        """Where the run is (a :class:`TrainState` with ``epoch``, ``rng`` and the loop's ``sampler`` or ``extra``
        entries) for a checkpoint at this step. Collective: called on all ranks."""
        raise NotImplementedError

    def check_resume(self, path: Path, ckpt: TrainState) -> None:
        """Refuse (a UserError) a checkpoint this run cannot continue, before anything is loaded."""

    def restore_position(self, ckpt: TrainState) -> None:
        """Put back what :meth:`position` saved (``self.step`` is restored already)."""

    # ------------------------------------------------------------------------------------------- one step
    def init_step_tools(self) -> None:
        """The loss scaler and the non-finite watch of this run (``self.precision``, ``self.device``)."""
        self.scaler = LossScaler(self.precision)
        self.watch = NonFiniteWatch(self.device)
        self.grad_norm: torch.Tensor | None = None

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimiser step on ``batch``; returns the stage's losses (not synchronised)."""
        self.start_step()
        losses = self.forward(self.step_inputs(batch))
        self.finish_step(losses["loss"], self.gradient_update(losses["loss"]))
        return losses

    def step_at(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """:meth:`train_step` at schedule position ``step`` (wrapped into the schedule): what the benchmarks time on
        a held batch, the learning rate, masking schedule and bookkeeping of that step included."""
        self.step = step % len(self.lr_schedule)
        return self.train_step(batch)

    def start_step(self) -> None:
        """The step's learning rate (x each group's ``lr_scale``) and weight decay, then :meth:`begin_step`."""
        set_lr(self.optimizer, float(self.lr_schedule[self.step]))
        if self.wd_schedule is not None:
            set_weight_decay(self.optimizer, float(self.wd_schedule[self.step]))
        self.begin_step(self.step)

    def gradient_update(self, loss: torch.Tensor, update: bool = True) -> torch.Tensor | None:
        """Backward of ``loss``; with ``update`` also unscale, clip and step (returns the gradient norm)."""
        clip = getattr(self.cfg, "clip_grad", None)
        return self.scaler(loss, self.optimizer, self.model_core.parameters, clip_grad=clip, update=update)

    def finish_step(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        """Zero the gradients, :meth:`end_step`, fold the step's ``loss`` into the non-finite watch (and, without
        a grad scaler, which skips overflow steps itself, the gradient norm), count the step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.end_step(self.step)
        self.watch.record(self.step, loss.detach(), grad_norm if not self.scaler.enabled else None)
        self.grad_norm = grad_norm
        self.step += 1

    def check_finite(self) -> None:
        """Stop all ranks together when any rank saw a non-finite loss (a sync; a small all-reduce)."""
        self.watch.check(self.explain)

    # ------------------------------------------------------------------------------------------------ the run
    def say(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    def setup(self) -> None:
        """Everything before the first step, once: seed, the resume checkpoint found (before :meth:`build`,
        which may read it), :meth:`build`, the step tools, :meth:`setup_loop`, the checkpoint loaded, then the
        run folder started - its first write, after every check (a refused resume leaves it as it was)."""
        if self._set_up:
            return
        cfg = self.cfg
        seed_everything(cfg.seed, self.dist.rank)
        found = self.agreed_resume() if continues(cfg) else None
        self.resumed_from, self.resumed = found if found else (None, None)
        self.build()
        self.init_step_tools()
        self.setup_loop()
        if found is not None:
            self._load(*found)
            self.say(f"semmae {self.verb}: resumed from {found[0]} at step {self.step} (epoch {self.epoch})")
        self.logger: RunLogger = self.run_dir.start(
            cfg, keep_log_until=self.keep_log_until() if continues(cfg) else None, may_change=self.may_change
        )
        self._set_up = True

    def run(self) -> Any:
        """Train to :meth:`steps_to_run` (from the resumed step), stopping at a step boundary on SIGTERM."""
        self.setup()
        try:
            with sigterm_requests() as self.termination:
                try:
                    self.begin_run()
                    while self.step < self.steps_to_run():
                        self.train_epoch()
                except RuntimeError as e:
                    # a loader outside the steps (an evaluation's) whose workers died of a group SIGTERM: the stop,
                    # at the last step taken (the steps' own loader ends between steps: Termination.batches)
                    if not self.termination.explains(e):
                        raise
                    self.stop()
            return self.end_run()
        finally:
            self.logger.close()

    def agreed_resume(self) -> tuple[Path, TrainState] | None:
        """What every rank resumes from (``--resume`` read by :func:`find_resume`), decided once: rank 0 picks
        (``auto`` skips damaged files) and broadcasts the path; the others load that file. Ranks that decided alone
        could disagree (a folder not shared between nodes, a file being written) and then hang in their first
        collective. Collective: call on all ranks."""
        found, error = None, None
        if self.dist.is_main:
            try:
                found = find_resume(self.cfg.resume, self.ckpts, self.kind, self.say)
            except UserError as e:
                error = str(e)
        chosen, error = du.broadcast_object((str(found[0]) if found else None, error))
        if error is not None:
            raise UserError(error)  # on every rank, together
        if chosen is None:
            return None
        problem = None
        if not self.dist.is_main:
            try:
                found = Path(chosen), read_stage_checkpoint(chosen, self.kind)
            except UserError as e:
                problem = str(e)
        problems = [(r, p) for r, p in enumerate(du.all_gather_object(problem)) if p is not None]
        if problems:
            rank, first = problems[0]
            raise UserError(f"--resume: rank {rank} cannot read rank 0's checkpoint {chosen}: {first}")
        return found

    def _load(self, path: Path, ckpt: TrainState) -> None:
        self.check_resume(path, ckpt)
        self.load_model_state(path, ckpt)
        self.load_optimizer_state(path, ckpt)
        self.scaler.load_state_dict(ckpt.scaler)
        self.step = self._saved_step = int(ckpt.step)
        self.epoch = int(ckpt.epoch or 0)
        self.restore_position(ckpt)

    def checkpoint(self) -> Path:
        """Save the run at this step (:meth:`model_state`, the optimiser, the scaler, :meth:`position` and
        :meth:`checkpoint_extras`) on rank 0, after a check for a non-finite loss. Collective: call on all ranks."""
        self.check_finite()
        place = self.position()
        path = self.ckpts.path_for(self.step)
        if self.is_main:
            models = self.model_state()
            self.ckpts.save(
                dataclasses.replace(
                    models,
                    kind=self.kind,
                    config=config_to_dict(self.cfg),
                    encoder=models.encoder if models.encoder is not None else self.encoder_record(),
                    optimizer=self.optimizer.state_dict(),
                    scaler=self.scaler.state_dict(),
                    step=self.step,
                    epoch=place.epoch,
                    rng=place.rng,
                    sampler=place.sampler,
                    extra={**models.extra, **place.extra, **self.checkpoint_extras()},
                )
            )
        self._saved_step = self.step
        du.barrier()
        return path

    def stop(self) -> None:
        """End a run stopped by SIGTERM as Ctrl-C ends one (one line, ``KeyboardInterrupt``: exit 130), after a
        checkpoint at this step (where the data ended inside a step, with the last checkpoint written)."""
        if not self._cut and self._saved_step != self.step:
            self.checkpoint()
        self.logger.close()
        stopped(self.verb, self.stop_place(), self.ckpts.latest() if self.is_main else None, self.is_main)

    def kept(self) -> str:
        """What a divergence message says is kept (:func:`~semmae.engine.nonfinite.kept_checkpoint`)."""
        return kept_checkpoint(self.ckpts.latest())


def run_trainer(trainer_cls: type[Trainer], cfg: Any) -> Any:
    """``semmae <verb>`` of a training stage: its preflight, then the process group, device and claimed run folder
    (:func:`~semmae.engine.stage_run.run_claimed`) around ``trainer_cls(...).run()``."""
    from semmae.engine.stage_run import run_claimed

    trainer_cls.preflight(cfg)
    return run_claimed(
        cfg, trainer_cls.verb, lambda c, dist, device, run: trainer_cls(c, dist, device, run).run()
    )


def open_trainer(trainer_cls: type[Trainer], cfg: Any) -> Trainer:
    """A trainer set up outside the CLI (benchmarks time its :meth:`~Trainer.train_step` before and after
    :meth:`~Trainer.run`): what :func:`run_trainer` does before ``run``, its run folder claimed until the process
    ends (or ``trainer.run_dir.release()``)."""
    from semmae.engine.stage_run import claim_stage_folder

    trainer_cls.preflight(cfg)
    dist, device, run_dir = claim_stage_folder(cfg, trainer_cls.verb)
    try:
        trainer = trainer_cls(cfg, dist, device, run_dir)
        trainer.setup()
    except BaseException as e:
        run_dir.__exit__(type(e), e, None)
        raise
    return trainer
