"""Pretraining steps measured by the benchmarks: a quiet config for short measured runs, a trainer with a chosen
masking strategy, one batch held on the device and the time of the trainer's own public step on it
(:meth:`~semmae.engine.trainer.Trainer.step_at`: draws, masks, the MAE under the run's precision, backward,
optimiser), never a copy of the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from semmae.engine.config import PretrainConfig
from semmae.engine.pretrain import Pretrainer
from semmae.engine.trainer import open_trainer
from semmae_lab.timing import step_times

#: a measured run draws no figures, keeps one checkpoint, shows no progress bar and logs to log.jsonl only
QUIET = dict(vis_every=0, ckpt_every=0, progress=False, keep_last=1, logger="none")
#: the part id standing for "no part" in a held batch's synthetic part ids (ids 0..5 are parts)
SYNTHETIC_NO_PART = 6


def bench_config(data: str | Path, out: str | Path, model: str, img_size: int, device: str = "cpu", **fields):
    """A validated :class:`PretrainConfig` of a short measured run: random masking, fp32 on the CPU and bf16
    elsewhere, batch 64, 2 loader workers, a log record every 5 steps, :data:`QUIET`; ``fields`` override any of it."""
    values: dict[str, Any] = dict(
        data=str(data),
        out=str(out),
        model=model,
        img_size=img_size,
        masking="random",
        epochs=100,
        warmup_epochs=1,
        batch_size=64,
        num_workers=2,
        precision="fp32" if device == "cpu" else "bf16",
        device=device,
        log_every=5,
        **QUIET,
    )
    cfg = PretrainConfig(**{**values, **fields})
    cfg.validate()
    return cfg


def built_trainer(trainer_cls: type, cfg: Any):
    """``trainer_cls`` built by the library (:func:`~semmae.engine.trainer.open_trainer`: the preflight, the run
    folder claimed, ``setup()``), its run folder closed again: its steps are timed outside a run."""
    trainer = open_trainer(trainer_cls, cfg)
    trainer.logger.close()
    trainer.run_dir.release()
    return trainer


def bench_trainer(cfg: PretrainConfig, masking: str | None = None) -> Pretrainer:
    """The run's trainer; ``masking`` swaps its strategy after the build (a config with random masking needs no
    part cache; the held batch then brings synthetic part ids, :func:`held_batch`)."""
    from semmae.masking import build_masking

    trainer = open_trainer(Pretrainer, cfg)
    if masking is not None:
        trainer.strategy = build_masking(masking, mask_ratio=cfg.mask_ratio, gamma=cfg.gamma)
    return trainer


def held_batch(trainer: Pretrainer, synthetic_parts: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """The loader's first batch prepared on the device (packed crops and flips done once, outside any timing).

    ``synthetic_parts``: when the data has no part cells, add uniform part ids ``[B, L]`` in ``0..6`` (6: no part,
    :data:`SYNTHETIC_NO_PART`) and a foreground score ``[B, L]``, for the strategies that read them."""
    batch = trainer.prepare(next(iter(trainer.loader)), 0, 0)
    if synthetic_parts and "part_ids" not in batch:
        g = torch.Generator().manual_seed(seed)
        shape = (batch["image"].shape[0], trainer.model_core.num_patches)
        batch["part_ids"] = torch.randint(0, SYNTHETIC_NO_PART + 1, shape, generator=g).to(trainer.device)
        batch["fg"] = torch.rand(shape, generator=g).to(trainer.device)
        trainer.no_part_id = SYNTHETIC_NO_PART
    return batch


def held_step_times(
    trainer: Pretrainer, batch: dict, steps: int, warmup: int = 3, start: int = 0, each: bool = True
):
    """Seconds of ``trainer.step_at(batch, i)`` (:func:`semmae_lab.timing.step_times`: one per step, or with
    ``each=False`` one for the window); ``i`` is the step's schedule position, counting from ``start``."""
    return step_times(lambda i: trainer.step_at(batch, i), steps, trainer.device, warmup, start, each)


def held_step_rate(trainer: Pretrainer, batch: dict, steps: int, warmup: int = 3, start: int = 0) -> float:
    """Images/s of the held-batch step over one window of ``steps`` steps: images over wall-clock time, the same
    statistic as a run's end-to-end rate (a median of step times would drop the slow steps a run's window keeps)."""
    (seconds,) = held_step_times(trainer, batch, steps, warmup, start, each=False)
    return batch["image"].shape[0] * steps / seconds
