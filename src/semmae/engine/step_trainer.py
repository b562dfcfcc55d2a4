"""The step-based training loop shared by ``semmae pretrain`` and ``semmae bootstrap``.

One optimiser step consumes a global batch of ``world_size x accum_iter x batch_size`` images. The loop owns what
every such stage needs and does the same way: the run folder claim, the device/world/precision, the plan
(effective batch, steps, MAE's ``lr = blr x batch / 256``), the step-indexed sampler and loader, gradient
accumulation under DDP's ``no_sync``, the optimiser step of the trainer core (:class:`~semmae.engine.trainer.Trainer`:
loss scaling, clipping, the lr/wd schedules, the non-finite watch that syncs only at log steps), logging, the progress bar, checkpoints that resume *to the step*
(model, optimiser, scaler, step, every rank's RNG state, the sampler position) and the online kNN. SIGTERM (what
schedulers send before they kill a job) stops at the next step boundary with a checkpoint there, then exits as
Ctrl-C does (``KeyboardInterrupt``: one line, exit 130); a rerun with ``--resume auto`` continues from it.

A stage subclasses :class:`StepTrainer` and fills in its hooks: :meth:`build` (data, model, optimiser, schedules),
:meth:`losses` (one micro-batch's losses), and optionally :meth:`begin_step`, :meth:`end_step`,
:meth:`log_extras`, :meth:`model_state` / :meth:`load_model_state` and :meth:`epoch_end`. Its public
:meth:`~semmae.engine.trainer.Trainer.train_step` is one optimiser step on one batch (no accumulation), as
benchmarks time it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from semmae.data.folder import scan_image_folder
from semmae.data.loader import DataLoader
from semmae.data.workers import auto_worker_plan, parse_num_workers
from semmae.engine.checkpoint import CheckpointManager
from semmae.engine.nonfinite import kept_checkpoint
from semmae.engine.precision import resolve_precision
from semmae.engine.progress import fmt_eta, memory_mb, step_bar
from semmae.engine.run_options import continues
from semmae.engine.sampler import SeededItems, StepSampler
from semmae.engine.schedule import scaled_lr
from semmae.engine.stage_run import command_inputs, read_folders
from semmae.engine.termination import sigterm_requests, stopped
from semmae.engine.trainer import Trainer
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.utils import distributed as du
from semmae.utils.plain_config import config_to_dict
from semmae.utils.run_logger import RunLogger
from semmae.utils.rundir import check_out_outside, claim_run_dir
from semmae.utils.seed import rng_state, set_rng_state


@dataclass
class RunPlan:
    """Sizes derived once from the config, the world and the dataset."""

    world_size: int
    batch_size: int
    accum_iter: int
    effective_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float


def plan_run(cfg: Any, world_size: int, num_images: int) -> RunPlan:
    """Effective batch, accumulation, steps and the absolute learning rate (``lr = blr * eff_batch / 256``)."""
    accum = cfg.accum_iter
    if cfg.global_batch is not None:
        per_step = cfg.batch_size * world_size
        if cfg.global_batch % per_step:
            raise UserError(
                f"--global-batch {cfg.global_batch} is not a multiple of --batch-size {cfg.batch_size} "
                f"x {world_size} rank(s) = {per_step}"
            )
        accum = cfg.global_batch // per_step
    eff = cfg.batch_size * accum * world_size
    spe = num_images // eff
    if spe < 1:
        raise UserError(
            f"the dataset has {num_images} images, fewer than one effective batch of {eff} "
            f"(batch {cfg.batch_size} x accum {accum} x {world_size} rank(s)); lower --batch-size"
        )
    total = cfg.epochs * spe
    lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.blr, eff)
    return RunPlan(
        world_size, cfg.batch_size, accum, eff, spe, total, int(round(cfg.warmup_epochs * spe)), lr
    )


class StepTrainer(Trainer):
    """One run of a step-based stage; :meth:`run` trains until the end or ``--max-steps``.

    After :meth:`build` the subclass must have set ``dataset``, ``plan``, ``model_core`` (the module that trains;
    DDP wraps it), ``optimizer`` and ``lr_schedule`` (per-step array).
    """

    verb = "train"  # the CLI verb, in messages and the run folder's claim
    kind = "pretrain"  # the checkpoint's ``kind``
    checkpoint_note = "checkpoint {checkpoint}"  # how the closing line names the checkpoint a run hands on
    loss_keys: tuple[str, ...] = ("loss",)  # per-step means kept on the device and logged
    _cut = False  # the data ended inside an accumulation cycle (a group SIGTERM): the run stops at its last checkpoint

    def __init__(self, cfg: Any):
        self.cfg = cfg
        check_out_outside(cfg.out, read_folders(cfg))
        self.preflight()
        want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.dist = du.init_distributed(want)
        self.device = du.resolve_device(want, self.dist)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.is_main = self.dist.is_main
        # the run folder is ours (or the run is refused) before anything is built; nothing is written into it
        # until every check, the resume checkpoint's included, has passed (semmae.utils.rundir)
        self.run_dir = claim_run_dir(
            cfg.out,
            self.verb,
            resume=continues(cfg),  # --overwrite wins over a default or explicit 'auto'
            overwrite=cfg.overwrite,
            enabled=self.is_main,
            resume_hint="--resume auto",
            inputs=command_inputs(cfg),
        )
        try:
            self._build()
        except BaseException as e:
            self.run_dir.__exit__(type(e), e, None)
            raise

    # ------------------------------------------------------------------------------------------------ hooks
    def preflight(self) -> None:
        """Checks that need neither data nor device (they fail before anything is claimed)."""

    def build(self) -> None:
        """Data, model, optimiser and schedules (see the class docstring)."""
        raise NotImplementedError

    def loader_items(self) -> tuple[Dataset, dict]:
        """What the DataLoader iterates and its batching arguments: seeded items, ``batch_size`` micro-batches."""
        p = self.plan
        return SeededItems(self.dataset, self.cfg.seed), dict(
            batch_size=p.batch_size, sampler=self.sampler, drop_last=False
        )

    def prepare(self, batch: dict, step: int, shard: int) -> dict:
        """A loaded micro-batch -> model inputs; identity by default. Counted as step time, not data wait: it
        should only queue device work (non-blocking copies, no ``.item()``)."""
        return batch

    def losses(self, batch: dict, step: int, shard: int) -> dict[str, torch.Tensor]:
        """One micro-batch's losses (``"loss"``: what is minimised, float32) under the run's precision."""
        raise NotImplementedError

    def begin_step(self, step: int) -> None:
        """Before the first micro-batch of optimiser step ``step`` (the learning rate is set already)."""

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """:meth:`train_step`'s forward: ``batch`` as this rank's only micro-batch of the step."""
        shard = self.dist.rank * self.plan.accum_iter
        return self.losses(self.prepare(batch, self.step, shard), self.step, shard)

    def end_step(self, step: int) -> None:
        """After optimiser step ``step`` (e.g. a teacher's EMA update)."""

    def log_extras(self, step: int, values: dict[str, float]) -> dict[str, Any]:
        """Stage-specific fields of a log record (``values``: the logged means of :attr:`loss_keys`)."""
        return {}

    def model_state(self) -> TrainState:
        """The checkpoint's model part: at least ``model``, ``model_config`` and ``encoder``."""
        raise NotImplementedError

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        """Load :meth:`model_state`'s entries back (a UserError when they do not fit this run)."""
        raise NotImplementedError

    def epoch_end(self, epoch: int) -> None:
        """After ``epoch`` finished epochs (1-based): the online kNN every ``--eval-every`` epochs."""
        if self.cfg.eval_every and epoch % self.cfg.eval_every == 0:
            self.online_knn(self.model_core, epoch)

    def describe(self) -> str:
        """The first words of the start line (``semmae pretrain: 1000 images``)."""
        return f"semmae {self.verb}: {len(self.dataset)} images"

    # ---------------------------------------------------------------------------------------------- building
    def _build(self) -> None:
        cfg = self.cfg
        self.skipped_images = 0  # unreadable files passed over in this process (--skip-bad-images)
        self.build()
        p = self.plan
        self.init_step_tools()
        self.ckpts = CheckpointManager(cfg.out, cfg.keep_last)
        self.step = 0
        self._saved_step = -1
        self.sampler = StepSampler(
            self.dataset,
            p.batch_size,
            p.accum_iter,
            num_replicas=p.world_size,
            rank=self.dist.rank,
            seed=cfg.seed,
        )
        workers = self.num_workers = self._num_workers()
        items, batching = self.loader_items()
        self.loader = DataLoader(
            items,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=self.worker_init_fn,
            **batching,
        )
        self.mask_gen = torch.Generator(device=self.device)
        if cfg.eval_every:  # read at epoch ends: a refusal there would come after writing
            scan_image_folder(cfg.eval_train)
            scan_image_folder(cfg.eval_val)
        self.resumed_from = self._maybe_resume()
        # a continued run drops log records past its checkpoint's step: they are logged again from here
        continuing = continues(cfg)
        self.logger: RunLogger = self.run_dir.start(cfg, keep_log_until=self.step if continuing else None)
        self.model: torch.nn.Module = self.model_core
        if p.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model_core, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)

    def _num_workers(self) -> int:
        """The loader's worker count; ``--num-workers auto`` also sets their priority (``worker_init_fn``)."""
        self.worker_init_fn = None
        n = parse_num_workers(str(self.cfg.num_workers))
        if n is None:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            plan = auto_worker_plan(getattr(self, "packed", False), self.device.type, local_world_size=local)
            n, self.worker_init_fn = plan.count, plan.init_fn
            if self.is_main:
                idle = " at idle priority (they share the step's cores)" if plan.idle and n else ""
                print(f"semmae {self.verb}: --num-workers auto -> {n} per rank{idle}", flush=True)
        return n

    # ------------------------------------------------------------------------------------------ checkpoints
    def _maybe_resume(self) -> Path | None:
        say = (lambda msg: print(msg, flush=True)) if self.is_main else (lambda msg: None)
        if not continues(self.cfg):  # a fresh run, or --overwrite: nothing of the old run is read
            return None
        found = self.agreed_resume(self.ckpts, say)
        if found is None:
            return None
        path, ckpt = found
        saved_eff = ckpt.sampler.get("effective_batch")
        if saved_eff is not None and saved_eff != self.plan.effective_batch:
            raise UserError(
                f"--resume {path}: it was trained with effective batch {saved_eff}, this run has "
                f"{self.plan.effective_batch}; keep batch x accum x world size the same to resume"
            )
        self.load_model_state(path, ckpt)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scaler.load_state_dict(ckpt.scaler)
        self.step = self._saved_step = int(ckpt.step)
        rngs = ckpt.rng
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        say(f"semmae {self.verb}: resumed from {path} at step {self.step} (epoch {ckpt.epoch})")
        return path

    def checkpoint(self) -> Path | None:
        """Save on rank 0 (every rank contributes its RNG state). Collective: call on all ranks."""
        rngs = du.all_gather_object(rng_state())
        self._saved_step = self.step
        if not self.is_main:
            return None
        p = self.plan
        state = dataclasses.replace(
            self.model_state(),
            kind=self.kind,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            epoch=self.step // p.steps_per_epoch,
            step=self.step,
            config=config_to_dict(self.cfg),
            rng=rngs,
            sampler={
                "epoch": self.step // p.steps_per_epoch,
                "step_in_epoch": self.step % p.steps_per_epoch,
                "seed": self.cfg.seed,
                "effective_batch": p.effective_batch,
                "steps_per_epoch": p.steps_per_epoch,
            },
        )
        return self.ckpts.save(state)

    def _check_finite(self) -> None:
        """Stop all ranks together when any rank saw a non-finite loss (one small all-reduce)."""

        def explain(step: int) -> str:
            return (
                f"the loss became non-finite at step {step} (epoch {step // self.plan.steps_per_epoch}); "
                f"{kept_checkpoint(self.ckpts.latest())}. Lower --blr, set --clip-grad, or use --precision bf16/fp32"
            )

        self.watch.check(explain, du.all_reduce_min)

    # ---------------------------------------------------------------------------------------------- training
    def run(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.plan
        end = p.total_steps if cfg.max_steps is None else min(p.total_steps, cfg.max_steps)
        if self.is_main:
            print(
                f"{self.describe()}, {p.world_size} rank(s) x batch {p.batch_size} x accum {p.accum_iter} = "
                f"effective batch {p.effective_batch}; base lr {cfg.blr:.3g}, effective lr {p.lr:.3g}; "
                f"{p.steps_per_epoch} steps/epoch, {p.total_steps} steps in all; precision {self.precision.name}; "
                f"device {self.device}",
                flush=True,
            )
        last_loss = float("nan")
        first_step = self.step
        self.model.train()
        with sigterm_requests() as self._termination:
            # one loader iterator for the whole run: its workers load the next epoch while this one ends
            self.sampler.set_span(self.step, end)
            self._stream = self._batches()
            self._cut = False
            try:
                while self.step < end:
                    epoch, start = divmod(self.step, p.steps_per_epoch)
                    last_loss = self._train_epoch(epoch, start, end)
                    self._check_finite()
                    stopping = self._stop_requested(force=True)
                    if (
                        (self.step % p.steps_per_epoch == 0 or self.step == end or stopping)
                        and self._saved_step != self.step
                        and not self._cut
                    ):
                        self.checkpoint()
                    if stopping:
                        self._stop()
                    if self.step % p.steps_per_epoch == 0:
                        self.epoch_end(self.step // p.steps_per_epoch)
            except RuntimeError as e:
                # a loader outside the steps (an evaluation's) whose workers died of a group SIGTERM: the stop, at
                # the last step taken (the steps' own loader ends between steps: Termination.batches)
                if not self._termination.explains(e):
                    raise
                loader_died = True
            else:
                loader_died = False
            if loader_died:
                if self._saved_step != self.step and not self._cut:
                    self.checkpoint()
                self._stop()
        self.logger.close()
        skipped = int(du.all_reduce_sum(torch.tensor(float(self.skipped_images), device=self.device)).item())
        if skipped and self.is_main:
            print(
                f"semmae {self.verb}: skipped {skipped} unreadable image load(s) (--skip-bad-images); "
                "`semmae data check` lists the files",
                flush=True,
            )
        du.barrier()
        checkpoint = str(self.ckpts.latest()) if self.is_main else None
        if checkpoint:
            loss_note = (
                f"last logged loss {last_loss:.4f}"
                if math.isfinite(last_loss) or self.step > first_step
                else "nothing left to train (the run had already finished)"
            )
            print(
                f"semmae {self.verb}: step {self.step}, {loss_note}; "
                + self.checkpoint_note.format(checkpoint=checkpoint),
                flush=True,
            )
        return {
            "skipped_images": skipped,
            "step": self.step,
            "loss": last_loss,
            "out": str(cfg.out),
            "checkpoint": checkpoint,
        }

    def _train_epoch(self, epoch: int, start: int, end: int) -> float:
        cfg, p = self.cfg, self.plan
        steps_here = min(p.steps_per_epoch, end - epoch * p.steps_per_epoch) - start
        bar = step_bar(steps_here, f"epoch {epoch}", self.is_main and cfg.progress)
        window_t, window_steps = time.perf_counter(), 0
        data_s = 0.0  # time this window spent waiting for the loader (prepare() is the step's: it queues device work)
        t_fetch = time.perf_counter()
        sums = {k: torch.zeros((), device=self.device) for k in self.loss_keys}
        loss_value = float("nan")
        micro = 0
        for batch in self._stream:  # run-wide (see run()): leave it at the epoch's end, do not exhaust it
            data_s += time.perf_counter() - t_fetch
            step = self.step
            if "skipped" in batch:  # unreadable files passed over with --skip-bad-images
                self.skipped_images += int(batch["skipped"].sum())
            if micro == 0:
                self.start_step()
                for v in sums.values():
                    v.zero_()
            shard = self.dist.rank * p.accum_iter + micro
            batch = self.prepare(batch, step, shard)
            last_micro = micro == p.accum_iter - 1
            sync = contextlib.nullcontext() if last_micro or p.world_size == 1 else self.model.no_sync()
            with sync:
                losses = self.losses(batch, step, shard)
                for k in self.loss_keys:
                    if k in losses:
                        sums[k] += losses[k].detach().float() / p.accum_iter
                grad_norm = self.gradient_update(losses["loss"] / p.accum_iter, update=last_micro)
            micro += 1
            if not last_micro:
                t_fetch = time.perf_counter()
                continue
            micro = 0
            self.finish_step(sums["loss"], grad_norm)
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == end:
                self._check_finite()
                values = {k: float(du.all_reduce_mean(v).item()) for k, v in sums.items()}
                loss_value = values["loss"]
                now = time.perf_counter()
                ips = window_steps * p.effective_batch / max(now - window_t, 1e-9)
                data_wait = data_s / max(now - window_t, 1e-9)
                window_t, window_steps, data_s = now, 0, 0.0
                record = dict(
                    epoch=epoch,
                    loss=loss_value,
                    lr=float(self.lr_schedule[step]),
                    **self.log_extras(step, values),
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    img_per_s=ips,
                    memory_mb=memory_mb(self.device),
                    skipped_images=self.skipped_images,
                    data_wait=data_wait,
                )
                self.logger.log(self.step, **record)
                eta = fmt_eta((end - self.step) * p.effective_batch / max(ips, 1e-9))
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}", img_s=f"{ips:.0f}", eta=eta
                    )
                elif self.is_main:  # --no-progress: one plain line per log interval (logs, pipes, CI)
                    print(
                        f"semmae {self.verb}: step {self.step}/{end} (epoch {epoch}) loss {loss_value:.4f} "
                        f"lr {record['lr']:.2e} {ips:.1f} img/s eta {eta}",
                        flush=True,
                    )
            if (
                cfg.ckpt_every
                and self.step % cfg.ckpt_every == 0
                and self.step % p.steps_per_epoch
                and self.step != end
            ):
                self._check_finite()
                self.checkpoint()
            t_fetch = time.perf_counter()
            if self.step >= end or self.step % p.steps_per_epoch == 0 or self._stop_requested():
                break
        # the loader ended inside an accumulation cycle (its workers died of a group SIGTERM and the micro-batch
        # was not loaded yet): that step is not taken, and its first micro-batches changed what a checkpoint here
        # would hold (the RNG, a stage's running statistics); the run stops with its last checkpoint
        self._cut = micro != 0
        if bar is not None:
            bar.close()
        return loss_value

    def _batches(self):
        """The loader's batches; a worker's death is looked at between them, never in the middle of a step (a
        step is taken whole or not at all); once SIGTERM arrived, a loader whose workers died of it ends where it
        has no batch loaded (:meth:`~semmae.engine.termination.Termination.batches`): the run stops at this step."""
        return self._termination.batches(self.loader)

    def _stop_requested(self, force: bool = False) -> bool:
        """Whether SIGTERM arrived (on any rank). Under torchrun the ranks agree at log steps (and with
        ``force``), where they synchronise anyway, so that every rank stops at the same step."""
        return self._termination.agreed(self.device, sync=force or self.step % self.cfg.log_every == 0)

    def _stop(self) -> None:
        """End a run stopped by SIGTERM as Ctrl-C ends one, after the checkpoint at this step (or, where the data
        ended inside a step, with the last checkpoint written)."""
        self.logger.close()
        where = self._saved_step if self._cut and self._saved_step >= 0 else self.step
        stopped(self.verb, f"step {where}", self.ckpts.latest() if self.is_main else None, self.is_main)

    def online_knn(self, encoder: torch.nn.Module, epoch: int) -> None:
        """kNN accuracy of ``encoder`` on ``--eval-train`` / ``--eval-val``, logged at this step."""
        from semmae.engine.online_eval import online_knn

        acc = online_knn(encoder, self.cfg, self.device, is_main=self.is_main)
        if acc is not None:
            self.logger.log(self.step, epoch=epoch, **acc)
        self.model.train()


def run_stage(trainer_cls: type[StepTrainer], cfg: Any) -> dict[str, Any]:
    """Build and run a step-based stage; returns ``{"step", "loss", "out", "checkpoint", "skipped_images"}``."""
    try:
        trainer = trainer_cls(cfg)
        with trainer.run_dir:
            try:
                return trainer.run()
            finally:
                trainer.logger.close()
    finally:
        du.cleanup()
