"""The step loop of :class:`~semmae.engine.trainer.Trainer`, shared by ``semmae pretrain`` and ``semmae bootstrap``.

One optimiser step consumes a global batch of ``world_size x accum_iter x batch_size`` images. What this loop adds
to the trainer's skeleton is how it iterates: the plan (effective batch, steps, MAE's ``lr = blr x batch / 256``),
the step-indexed sampler and one loader iterator for the whole run, gradient accumulation under DDP's ``no_sync``,
logging and the non-finite check at log steps, the progress bar, keep-last-K checkpoints by step that resume *to the
step* (every rank's RNG state and the sampler position) and the online kNN.

A stage fills in the trainer's hooks (:meth:`~semmae.engine.trainer.Trainer.build`,
:meth:`~semmae.engine.trainer.Trainer.forward` for one micro-batch, ...) and this loop's two data hooks,
:meth:`StepTrainer.loader_items` and :meth:`StepTrainer.prepare`, and :meth:`StepTrainer.log_extras`. Its public
:meth:`~semmae.engine.trainer.Trainer.train_step` is one optimiser step on one loaded batch (``prepare`` and the
forward, no accumulation), as benchmarks time it.
"""

from __future__ import annotations

import contextlib
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
from semmae.engine.progress import fmt_eta, memory_mb, step_bar
from semmae.engine.sampler import SeededItems, StepSampler
from semmae.engine.schedule import scaled_lr
from semmae.engine.trainer import Trainer
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.utils import distributed as du
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
    DDP wraps it), ``optimizer`` and ``lr_schedule`` (per-step array). :meth:`forward` reads ``self.step`` and
    ``self.shard`` (``rank x accum_iter + micro-batch``: what the masks and augmentations are seeded with).
    """

    kind = "pretrain"
    checkpoint_note = "checkpoint {checkpoint}"  # how the closing line names the checkpoint a run hands on
    loss_keys: tuple[str, ...] = ("loss",)  # per-step means kept on the device and logged

    def checkpoint_manager(self) -> CheckpointManager:
        return CheckpointManager(self.cfg.out, self.cfg.keep_last)

    # ------------------------------------------------------------------------------------------ data hooks
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

    def log_extras(self, step: int, values: dict[str, float]) -> dict[str, Any]:
        """Stage-specific fields of a log record (``values``: the logged means of :attr:`loss_keys`)."""
        return {}

    def describe(self) -> str:
        """The first words of the start line (``semmae pretrain: 1000 images``)."""
        return f"semmae {self.verb}: {len(self.dataset)} images"

    def epoch_end(self, epoch: int) -> None:
        """After epoch ``epoch`` (0-based): the online kNN every ``--eval-every`` epochs."""
        if self.cfg.eval_every and (epoch + 1) % self.cfg.eval_every == 0:
            self.online_knn(self.model_core, epoch + 1)

    def explain(self, step: int) -> str:
        return (
            f"the loss became non-finite at step {step} (epoch {step // self.plan.steps_per_epoch}); "
            f"{self.kept()}. Lower --blr, set --clip-grad, or use --precision bf16/fp32"
        )

    # ------------------------------------------------------------------------------------------ loop hooks
    def setup_loop(self) -> None:
        cfg, p = self.cfg, self.plan
        self.skipped_images = 0  # unreadable files passed over in this process (--skip-bad-images)
        self.shard = self.dist.rank * p.accum_iter
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
        self.model: torch.nn.Module = self.model_core
        if p.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model_core, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)

    def step_inputs(self, batch: dict) -> dict:
        return self.prepare(batch, self.step, self.shard)

    def steps_to_run(self) -> int:
        return (
            self.plan.total_steps
            if self.cfg.max_steps is None
            else min(self.plan.total_steps, self.cfg.max_steps)
        )

    def check_resume(self, path: Path, ckpt: TrainState) -> None:
        saved_eff = ckpt.sampler.get("effective_batch")
        if saved_eff is not None and saved_eff != self.plan.effective_batch:
            raise UserError(
                f"--resume {path}: it was trained with effective batch {saved_eff}, this run has "
                f"{self.plan.effective_batch}; keep batch x accum x world size the same to resume"
            )

    def position(self) -> TrainState:
        """Every rank's RNG state (gathered: collective) and the sampler's place."""
        p = self.plan
        return TrainState(
            epoch=self.step // p.steps_per_epoch,
            rng=du.all_gather_object(rng_state()),
            sampler={
                "epoch": self.step // p.steps_per_epoch,
                "step_in_epoch": self.step % p.steps_per_epoch,
                "seed": self.cfg.seed,
                "effective_batch": p.effective_batch,
                "steps_per_epoch": p.steps_per_epoch,
            },
        )

    def restore_position(self, ckpt: TrainState) -> None:
        rngs = ckpt.rng
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])

    def stop_place(self) -> str:
        return f"step {self._saved_step if self._cut and self._saved_step >= 0 else self.step}"

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

    # ---------------------------------------------------------------------------------------------- the run
    def begin_run(self) -> None:
        cfg, p = self.cfg, self.plan
        self.say(
            f"{self.describe()}, {p.world_size} rank(s) x batch {p.batch_size} x accum {p.accum_iter} = "
            f"effective batch {p.effective_batch}; base lr {cfg.blr:.3g}, effective lr {p.lr:.3g}; "
            f"{p.steps_per_epoch} steps/epoch, {p.total_steps} steps in all; precision {self.precision.name}; "
            f"device {self.device}"
        )
        self.last_loss = float("nan")
        self.first_step = self.step
        self.model.train()
        # one loader iterator for the whole run: its workers load the next epoch while this one ends
        self.sampler.set_span(self.step, self.steps_to_run())
        self._stream = self.termination.batches(self.loader)
        self._cut = False

    def train_epoch(self) -> None:
        spe, end = self.plan.steps_per_epoch, self.steps_to_run()
        epoch, start = divmod(self.step, spe)
        self.last_loss = self._epoch_steps(epoch, start, end)
        self.check_finite()
        stopping = self._stop_requested(force=True)
        if (
            (self.step % spe == 0 or self.step == end or stopping)
            and self._saved_step != self.step
            and not self._cut
        ):
            self.checkpoint()
        if stopping:
            self.stop()
        if self.step % spe == 0:
            self.epoch_end(self.step // spe - 1)

    def end_run(self) -> dict[str, Any]:
        self.logger.close()
        skipped = int(du.all_reduce_sum(torch.tensor(float(self.skipped_images), device=self.device)).item())
        if skipped:
            self.say(
                f"semmae {self.verb}: skipped {skipped} unreadable image load(s) (--skip-bad-images); "
                "`semmae data check` lists the files"
            )
        du.barrier()
        checkpoint = str(self.ckpts.latest()) if self.is_main else None
        if checkpoint:
            loss_note = (
                f"last logged loss {self.last_loss:.4f}"
                if math.isfinite(self.last_loss) or self.step > self.first_step
                else "nothing left to train (the run had already finished)"
            )
            self.say(
                f"semmae {self.verb}: step {self.step}, {loss_note}; "
                + self.checkpoint_note.format(checkpoint=checkpoint)
            )
        return {
            "skipped_images": skipped,
            "step": self.step,
            "loss": self.last_loss,
            "out": str(self.cfg.out),
            "checkpoint": checkpoint,
        }

    def _epoch_steps(self, epoch: int, start: int, end: int) -> float:
        """The steps of epoch ``epoch`` from its ``start``-th, up to ``end``; returns the last logged loss."""
        cfg, p = self.cfg, self.plan
        steps_here = min(p.steps_per_epoch, end - epoch * p.steps_per_epoch) - start
        bar = step_bar(steps_here, f"epoch {epoch}", self.is_main and cfg.progress)
        window_t, window_steps = time.perf_counter(), 0
        data_s = 0.0  # time this window spent waiting for the loader (prepare() is the step's: it queues device work)
        t_fetch = time.perf_counter()
        sums = {k: torch.zeros((), device=self.device) for k in self.loss_keys}
        loss_value = float("nan")
        micro = 0
        # the run-wide stream (see begin_run()): leave it at the epoch's end, do not exhaust it
        for batch in self._stream:
            data_s += time.perf_counter() - t_fetch
            step = self.step
            if "skipped" in batch:  # unreadable files passed over with --skip-bad-images
                self.skipped_images += int(batch["skipped"].sum())
            if micro == 0:
                self.start_step()
                for v in sums.values():
                    v.zero_()
            shard = self.shard = self.dist.rank * p.accum_iter + micro
            batch = self.prepare(batch, step, shard)
            last_micro = micro == p.accum_iter - 1
            sync = contextlib.nullcontext() if last_micro or p.world_size == 1 else self.model.no_sync()
            with sync:
                losses = self.forward(batch)
                for k in self.loss_keys:
                    if k in losses:
                        sums[k] += losses[k].detach().float() / p.accum_iter
                grad_norm = self.gradient_update(losses["loss"] / p.accum_iter, update=last_micro)
            micro += 1
            if not last_micro:
                t_fetch = time.perf_counter()
                continue
            micro, self.shard = 0, self.dist.rank * p.accum_iter  # train_step outside the loop: micro-batch 0
            self.finish_step(sums["loss"], grad_norm)
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == end:
                self.check_finite()
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
                self.check_finite()
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

    def _stop_requested(self, force: bool = False) -> bool:
        """Whether SIGTERM arrived (on any rank). Under torchrun the ranks agree at log steps (and with
        ``force``), where they synchronise anyway, so that every rank stops at the same step."""
        return self.termination.agreed(self.device, sync=force or self.step % self.cfg.log_every == 0)

    def online_knn(self, encoder: torch.nn.Module, epoch: int) -> None:
        """kNN accuracy of ``encoder`` on ``--eval-train`` / ``--eval-val``, logged at this step."""
        from semmae.engine.online_eval import online_knn

        acc = online_knn(encoder, self.cfg, self.device, is_main=self.is_main)
        if acc is not None:
            self.logger.log(self.step, epoch=epoch, **acc)
        self.model.train()
