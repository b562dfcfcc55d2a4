"""The epoch loop of :class:`~semmae.engine.trainer.Trainer`: parts train, finetune, the full linear probe and
segment train.

Epochs over a loader, one ``checkpoint.pth`` (each epoch, every ``ckpt_every`` steps where a stage asks, or only
where the run stops). A stop inside an epoch resumes at its step, bit for bit: the epoch's first batches are loaded
again with the epoch's loader generator and RNG state, then the RNG of the stop is put back
(:func:`~semmae.engine.termination.replayed`). Under torchrun the ranks agree on a stop (one small all-reduce) only
where they synchronise anyway: at log steps (``sync_every`` steps) and at epoch ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm import tqdm

from semmae.engine.checkpoint import CheckpointManager
from semmae.engine.termination import replayed
from semmae.engine.trainer import Trainer
from semmae.models.checkpoint_schema import TrainState
from semmae.utils.seed import rng_state, set_rng_state


class EpochTrainer(Trainer):
    """An epoch-based stage on the trainer. :meth:`build` sets ``model_core``, ``model`` (what runs the forward:
    ``model_core`` or its DDP), ``optimizer``, ``lr_schedule``, ``steps_per_epoch``, ``total_steps`` and ``loader``
    (or overrides :meth:`epoch_batches`, :meth:`loader_rng` and :meth:`set_loader_rng`). :meth:`epoch_end` finds
    the epoch's summed losses in ``epoch_sums`` (on the device) and its step count in ``epoch_steps``.
    """

    ckpt_name = "checkpoint.pth"
    checkpoint_each_epoch = True
    may_change = ("epochs", "iters")  # an epoch stage continued with more epochs (segment train: iterations)
    sum_keys: tuple[str, ...] | None = ("loss",)  # per-epoch loss sums kept on the device (None: every loss)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.sync_every = int(getattr(self.cfg, "log_every", None) or self.cfg.check_every)
        self._in_epoch: dict[str, Any] = {"done": 0, "sums": {}, "start": None}
        self._resume_at: dict[str, Any] = {}
        self.epoch_sums: dict[str, torch.Tensor] = {}
        self.epoch_steps = 0

    def checkpoint_manager(self) -> CheckpointManager:
        return CheckpointManager(self.cfg.out, single=self.ckpt_name)

    # ------------------------------------------------------------------------------------------ loop hooks
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

    def stop_place(self) -> str:
        steps = self.steps_in_epoch()
        if steps is None:
            return f"the end of epoch {self.epoch - 1}"
        return f"epoch {self.epoch} step {steps}/{self.steps_per_epoch}"

    def steps_in_epoch(self) -> int | None:
        """The steps taken in the current epoch, None at an epoch's end (the next one not started)."""
        return self._in_epoch["done"] or None

    def position(self) -> TrainState:
        """After an epoch, or inside one: then with where the epoch's order started and the RNG state now, so that
        a resume continues at this very step."""
        state = self._in_epoch
        inside = 0 < state["done"] < self.steps_per_epoch  # else at an epoch's end: the next one starts here
        loader_rng, rng = state["start"] if inside else (self.loader_rng(), rng_state())
        where = {
            "step_in_epoch": state["done"] if inside else 0,
            "partial": {k: float(v) for k, v in state["sums"].items()} if inside else None,
            "loader_rng": loader_rng,
            "rng_at_stop": rng_state() if inside else None,
        }
        epochs = self.epoch + int(state["done"] >= self.steps_per_epoch)
        return TrainState(epoch=epochs, rng=rng, extra=where)

    def restore_position(self, ckpt: TrainState) -> None:
        extra = ckpt.extra
        self._resume_at = {"start": int(extra["step_in_epoch"]), "partial": extra.get("partial")}
        if extra.get("loader_rng") is not None:
            self.set_loader_rng(extra["loader_rng"])
        if ckpt.rng is not None and self.dist.world_size == 1:  # one process: its RNG runs on as saved
            set_rng_state(ckpt.rng)
            self._resume_at["rng_at_stop"] = extra.get("rng_at_stop")

    # ------------------------------------------------------------------------------------------ the epoch
    def train_epoch(self) -> None:
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
        done = self.epoch_steps = state["done"]
        self.epoch_sums = state["sums"]
        if done < spe:  # the run's last step came inside the epoch, or a stop
            if stop and self.step < self.total_steps:
                self.stop()
            self.epoch_end(epoch)
            return
        self.epoch += 1
        self._in_epoch = {"done": 0, "sums": {}, "start": None}
        self.epoch_end(epoch)
        more = self.step < self.total_steps
        if self.checkpoint_each_epoch or (stop and more):
            self.checkpoint()
        if stop and more:
            self.stop()
