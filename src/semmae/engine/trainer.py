"""The one trainer every training stage runs on (issue 27): one optimiser step, resuming, and the epoch loop.

:class:`Trainer` is the reusable core. Its public :meth:`Trainer.train_step` is one optimiser step on one batch:
the step's learning rate (and weight decay, where the stage has a schedule for it) from per-step arrays, the stage's
:meth:`~Trainer.forward` hook (its losses, under the run's precision), the :class:`LossScaler` (backward, unscale,
clip, step: the only place in semmae that calls ``backward``), zeroed gradients, the :meth:`~Trainer.end_step` hook
(an EMA, a teacher) and the non-finite watch (:mod:`semmae.engine.nonfinite`). Its :meth:`~Trainer.agreed_resume`
is the one way a run finds its checkpoint (:func:`semmae.engine.checkpoint.find_resume`, chosen on rank 0).

Two loops run on it:

* :class:`semmae.engine.step_trainer.StepTrainer` - pretrain and bootstrap: step-indexed sampling, gradient
  accumulation, keep-last-K checkpoints by step;
* :class:`EpochTrainer` (here) - parts train, finetune, the full linear probe and segment train: epochs over a
  loader, one ``checkpoint.pth`` (each epoch, every ``ckpt_every`` steps, or only where the run stops), and an
  epoch-end hook (evaluation, logging, a best file).

Both stop on SIGTERM at a step boundary with a checkpoint there and exit 130 (:mod:`semmae.engine.termination`),
also when a scheduler signals the whole process group and the loader's workers die of it (a step is taken whole or
not at all: a worker's death is looked at between steps); under torchrun the ranks agree on a stop (one small
all-reduce) only where they synchronise anyway: at log steps (``sync_every`` steps) and at epoch ends. A stop inside an epoch resumes at its step, bit for bit: the epoch's
first batches are loaded again with the epoch's loader generator and RNG state, then the RNG of the stop is put
back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from semmae.engine.checkpoint import CheckpointManager, find_resume, load_states, read_stage_checkpoint
from semmae.engine.nonfinite import NonFiniteWatch, kept_checkpoint
from semmae.engine.precision import Precision, resolve_precision
from semmae.engine.run_options import continues
from semmae.engine.schedule import set_lr, set_weight_decay
from semmae.engine.termination import replayed, sigterm_requests, stopped
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_record import EncoderRecord
from semmae.utils import distributed as du
from semmae.utils.plain_config import config_to_dict
from semmae.utils.run_logger import RunLogger
from semmae.utils.rundir import RunDir
from semmae.utils.seed import rng_state, seed_everything, set_rng_state


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
    """The core of a training run: :meth:`train_step` and the resume every stage shares.

    Before the first step a stage has set ``cfg``, ``device``, ``dist``, ``model_core`` (the module that trains, not
    wrapped), ``optimizer``, ``lr_schedule`` (per-step array) and optionally ``wd_schedule``, and called
    :meth:`init_step_tools`. ``cfg.clip_grad`` (when the config has it) clips the gradient norm.
    """

    verb = "train"  # the CLI verb, in messages
    kind = "train"  # the checkpoint's ``kind``
    wd_schedule = None  # per-step weight decay (bootstrap), or None

    # ------------------------------------------------------------------------------------------------ hooks
    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """One batch's losses (``"loss"``: what is minimised, float32), the forward under the run's precision."""
        raise NotImplementedError

    def begin_step(self, step: int) -> None:
        """Before the forward of optimiser step ``step`` (its learning rate is set already)."""

    def end_step(self, step: int) -> None:
        """After optimiser step ``step`` (an EMA of the weights, a teacher's update)."""

    # ------------------------------------------------------------------------------------------- one step
    def init_step_tools(self) -> None:
        """The loss scaler and the non-finite watch of this run (``self.precision``, ``self.device``)."""
        self.scaler = LossScaler(self.precision)
        self.watch = NonFiniteWatch(self.device)
        self.grad_norm: torch.Tensor | None = None

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimiser step on ``batch``; returns the stage's losses (not synchronised)."""
        self.start_step()
        losses = self.forward(batch)
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

    # --------------------------------------------------------------------------------------------- resume
    def agreed_resume(self, ckpts: CheckpointManager, say) -> tuple[Path, TrainState] | None:
        """What every rank resumes from (``--resume`` read by :func:`find_resume`), decided once: rank 0 picks
        (``auto`` skips damaged files) and broadcasts the path; the others load that file. Ranks that decided alone
        could disagree (a folder not shared between nodes, a file being written) and then hang in their first
        collective. Collective: call on all ranks."""
        found, error = None, None
        if self.dist.is_main:
            try:
                found = find_resume(self.cfg.resume, ckpts, self.kind, say)
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


class EpochTrainer(Trainer):
    """An epoch-based stage (parts train, finetune, the full linear probe, segment train) on the trainer.

    :meth:`run`: seed, find the resume checkpoint, :meth:`build`, load the checkpoint, start the run folder, then
    epochs until ``total_steps``, then :meth:`end_run`. :meth:`build` sets ``model_core``, ``optimizer``,
    ``lr_schedule``, ``steps_per_epoch``, ``total_steps`` and ``loader`` (or overrides :meth:`epoch_batches`); a
    stage implements :meth:`forward` and :meth:`explain` and may fill in the other hooks.

    Checkpoints (``<out>/checkpoint.pth``, :mod:`semmae.engine.checkpoint`): at each epoch end when
    ``checkpoint_each_epoch``, wherever the stage calls :meth:`checkpoint`, and where SIGTERM stops the run.
    """

    ckpt_name = "checkpoint.pth"
    checkpoint_each_epoch = True
    sum_keys: tuple[str, ...] | None = ("loss",)  # per-epoch loss sums kept on the device (None: every loss)

    def __init__(self, cfg: Any, dist: du.DistInfo, device: torch.device, run_dir: RunDir):
        self.cfg, self.dist, self.device, self.run_dir = cfg, dist, device, run_dir
        self.is_main = dist.is_main
        self.precision = resolve_precision(cfg.precision, device)
        self.ckpts = CheckpointManager(cfg.out, single=self.ckpt_name)
        self.sync_every = int(getattr(cfg, "log_every", None) or cfg.check_every)
        self.step = self.epoch = 0
        self.resumed: TrainState | None = None  # the checkpoint the run continues (read before build)
        self._in_epoch = {"done": 0, "sums": {}, "start": None}
        self._resume_at: dict[str, Any] = {}
        self._saved_step = -1

    # ------------------------------------------------------------------------------------------------ hooks
    def build(self) -> None:
        raise NotImplementedError

    def explain(self, step: int) -> str:
        """The message of a non-finite loss first seen at ``step``."""
        raise NotImplementedError

    def epoch_batches(self, epoch: int, start: int, rng: dict | None) -> Iterable[Any]:
        """Epoch ``epoch``'s batches from its ``start``-th: the ones before are loaded again and passed over, then
        ``rng`` (None: nothing) is put back (:func:`~semmae.engine.termination.replayed`)."""
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle each epoch
            sampler.set_epoch(epoch)
        return replayed(self.loader, start, rng) if start or rng is not None else self.loader

    def loader_rng(self) -> Any:
        """The state of what orders the epochs' batches (the loader's generator), for a resume mid-epoch."""
        generator = getattr(self.loader, "generator", None)
        return generator.get_state() if generator is not None else None

    def set_loader_rng(self, state: Any) -> None:
        self.loader.generator.set_state(state)

    def model_state(self) -> TrainState:
        """The checkpoint's model part: at least ``model`` (a stage's other weights in ``extra``)."""
        return TrainState(model=self.model_core.state_dict())

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        """Load :meth:`model_state`'s entries back (a UserError when they do not fit this run)."""
        load_states(path, ckpt, model=self.model_core)

    def load_optimizer_state(self, path: Path, ckpt: TrainState) -> None:
        load_states(path, ckpt, optimizer=self.optimizer)

    def encoder_record(self) -> EncoderRecord | None:
        """The stage's encoder (None: none)."""
        return None

    def checkpoint_extras(self) -> dict[str, Any]:
        """The stage's own checkpoint entries."""
        return {}

    def keep_log_until(self) -> int:
        """A continued run drops its log's records after this step (default: the optimiser step)."""
        return self.step

    def begin_run(self) -> None:
        """After the run folder started, before the first epoch (a start record)."""

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """After each optimiser step (logging at log steps, a periodic evaluation or checkpoint)."""

    def epoch_end(self, epoch: int, sums: dict[str, torch.Tensor], steps: int) -> None:
        """After epoch ``epoch`` (0-based) of ``steps`` steps, whose losses summed to ``sums`` (on the device)."""

    def end_run(self) -> Any:
        """After the last epoch; what :meth:`run` returns."""
        return None

    def stop_place(self, steps: int | None) -> str:
        """Where a stopped run stopped, for its last line: ``steps`` into the current epoch, or (None) at the end
        of the epoch just finished."""
        if steps is None:
            return f"the end of epoch {self.epoch - 1}"
        return f"epoch {self.epoch} step {steps}/{self.steps_per_epoch}"

    # ------------------------------------------------------------------------------------------------- run
    def run(self) -> Any:
        cfg = self.cfg
        seed_everything(cfg.seed, self.dist.rank)
        say = (lambda msg: print(msg, flush=True)) if self.is_main else (lambda msg: None)
        found = self.agreed_resume(self.ckpts, say) if continues(cfg) else None
        self.resumed_from, self.resumed = found if found else (None, None)
        self.build()
        self.init_step_tools()
        if found is not None:
            self._load(*found)
            say(f"semmae {self.verb}: resumed from {found[0]} at step {self.step} (epoch {self.epoch})")
        # the first write into the run folder, after every check above (a refused resume leaves it as it was)
        self.logger: RunLogger = self.run_dir.start(
            cfg,
            keep_log_until=self.keep_log_until() if continues(cfg) else None,
            # an epoch stage continued with more epochs (segment train: iterations) trains on: its documented use
            may_change=("epochs", "iters"),
        )
        try:
            with sigterm_requests() as self.termination:
                try:
                    self.begin_run()
                    while self.step < self.total_steps:
                        self._train_epoch()
                except RuntimeError as e:
                    # a loader outside the steps (an evaluation's) whose workers died of a group SIGTERM: the stop,
                    # at the last step taken (the steps' own loader ends between steps: Termination.batches)
                    if not self.termination.explains(e):
                        raise
                    loader_died = True
                else:
                    loader_died = False
                if loader_died:
                    done = self._in_epoch["done"]
                    self._stop(done if done else None)
            return self.end_run()
        finally:
            self.logger.close()

    def _load(self, path: Path, ckpt: TrainState) -> None:
        self.load_model_state(path, ckpt)
        self.load_optimizer_state(path, ckpt)
        self.scaler.load_state_dict(ckpt.scaler)
        self.step, self.epoch = int(ckpt.step), int(ckpt.epoch)
        extra = ckpt.extra
        self._resume_at = {"start": int(extra["step_in_epoch"]), "partial": extra.get("partial")}
        if extra.get("loader_rng") is not None:
            self.set_loader_rng(extra["loader_rng"])
        if ckpt.rng is not None and self.dist.world_size == 1:  # one process: its RNG runs on as saved
            set_rng_state(ckpt.rng)
            self._resume_at["rng_at_stop"] = extra.get("rng_at_stop")

    def _train_epoch(self) -> None:
        epoch, spe = self.epoch, self.steps_per_epoch
        resume, self._resume_at = self._resume_at, {}
        skip = resume.get("start", 0)
        state = self._in_epoch = {"done": skip, "sums": {}, "start": (self.loader_rng(), rng_state())}
        if skip and resume.get("partial"):
            state["sums"] = {k: torch.tensor(v, device=self.device) for k, v in resume["partial"].items()}
        at_stop = resume.get("rng_at_stop") if skip else None
        self.model.train()  # an evaluation at the last epoch's end left it in eval mode
        with tqdm(
            total=spe,
            initial=skip,
            desc=f"{self.verb} epoch {epoch}",
            disable=not self.is_main or not getattr(self.cfg, "progress", True),
            leave=False,
            dynamic_ncols=True,
        ) as bar:  # closed before an error is printed: the message keeps its own line
            stop = False
            for batch in self.termination.batches(self.epoch_batches(epoch, skip, at_stop)):
                if state["done"] >= spe or self.step >= self.total_steps:
                    break
                losses = self.train_step(batch)
                for k in self.sum_keys if self.sum_keys is not None else losses:
                    state["sums"][k] = state["sums"].get(k, 0) + losses[k].detach().float()
                state["done"] += 1
                bar.update(1)
                at_sync = self.step % self.sync_every == 0
                if at_sync or self.step == self.total_steps:
                    self.check_finite()
                self.after_step(losses)
                if self.termination.agreed(self.device, sync=at_sync):
                    # after an epoch's last step its loader ends as in a run never stopped
                    stop = True
                    if state["done"] < spe:
                        break
        self.check_finite()
        stop = stop or self.termination.agreed(self.device)  # also where the loader ended (group SIGTERM)
        done = state["done"]
        if done < spe:  # the run's last step came inside the epoch, or a stop
            if stop and self.step < self.total_steps:
                self._stop(done)
            self.epoch_end(epoch, state["sums"], done)
            return
        self.epoch += 1
        self._in_epoch = {"done": 0, "sums": {}, "start": None}
        self.epoch_end(epoch, state["sums"], done)
        more = self.step < self.total_steps
        if self.checkpoint_each_epoch or (stop and more):
            self.checkpoint()
        if stop and more:
            self._stop(None)

    def _stop(self, steps: int | None) -> None:
        """End a run stopped by SIGTERM as Ctrl-C ends one, after a checkpoint at this step."""
        if self._saved_step != self.step:
            self.checkpoint()
        self.logger.close()
        stopped(self.verb, self.stop_place(steps), self.ckpts.path_for(self.step), self.is_main)

    # ------------------------------------------------------------------------------------------ checkpoints
    def check_finite(self) -> None:
        """Stop all ranks together when any rank saw a non-finite loss (a sync; a small all-reduce)."""
        self.watch.check(self.explain)

    def checkpoint(self) -> Path:
        """Save ``checkpoint.pth`` at this step on rank 0: after an epoch, or inside one (then with where the
        epoch's order started and the RNG state now, so that a resume continues at this very step). Collective:
        call on all ranks."""
        self.check_finite()
        state = self._in_epoch
        inside = 0 < state["done"] < self.steps_per_epoch  # else at an epoch's end: the next one starts here
        epochs = self.epoch + int(state["done"] >= self.steps_per_epoch)
        loader_rng, rng = state["start"] if inside else (self.loader_rng(), rng_state())
        path = self.ckpts.path_for(self.step)
        if self.is_main:
            models = self.model_state()
            where = {
                "step_in_epoch": state["done"] if inside else 0,
                "partial": {k: float(v) for k, v in state["sums"].items()} if inside else None,
                "loader_rng": loader_rng,
                "rng_at_stop": rng_state() if inside else None,
            }
            self.ckpts.save(
                TrainState(
                    kind=self.kind,
                    config=config_to_dict(self.cfg),
                    encoder=self.encoder_record(),
                    model=models.model,
                    optimizer=self.optimizer.state_dict(),
                    scaler=self.scaler.state_dict(),
                    step=self.step,
                    epoch=epochs,
                    rng=rng,
                    extra={**models.extra, **where, **self.checkpoint_extras()},
                )
            )
        self._saved_step = self.step
        du.barrier()
        return path

    def kept(self) -> str:
        """What a divergence message says is kept (:func:`~semmae.engine.nonfinite.kept_checkpoint`)."""
        return kept_checkpoint(self.ckpts.latest())


def run_epoch_stage(trainer_cls: type[EpochTrainer], cfg: Any) -> Any:
    """``semmae <verb>`` of an epoch stage: the process group, device and claimed run folder
    (:func:`~semmae.engine.stage_run.run_claimed`) around ``trainer_cls(...).run()``."""
    from semmae.engine.stage_run import run_claimed

    return run_claimed(
        cfg, trainer_cls.verb, lambda c, dist, device, run: trainer_cls(c, dist, device, run).run()
    )
