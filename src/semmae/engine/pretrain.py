"""``semmae pretrain``: MAE / SemMAE pretraining on one CPU, one GPU or many nodes (paper Sec. 4.1).

One optimiser step consumes a global batch of ``world_size x accum_iter x batch_size`` images. For each
micro-batch the engine builds the mask outside the model (``semmae.masking``; alpha from this run's own
progress ``step / total_steps``), optionally keeps only the most-foreground patches (the paper's ViT-B/8
setting), runs the MAE under the run's precision and accumulates gradients; the learning rate follows a
per-iteration warm-up + cosine array indexed by the global step. Checkpoints carry everything a resume needs
to continue *to the step*: model, optimiser, scaler, step, every rank's RNG state and the sampler position.
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
from torch.utils.data import BatchSampler, Dataset

from semmae.config import config_to_dict
from semmae.data.loader import DataLoader
from semmae.data.workers import auto_num_workers, lower_priority, parse_num_workers
from semmae.engine.checkpoint import CheckpointManager, load_resume
from semmae.engine.config import PART_FREE_HINT, PretrainConfig
from semmae.engine.optim import build_optimizer, set_lr
from semmae.engine.sampler import SeededItems, StepSampler, mix_seed
from semmae.engine.schedule import cosine_schedule, progress, scaled_lr
from semmae.errors import NonFiniteLossError, UserError
from semmae.utils import distributed as du
from semmae.utils.precision import LossScaler, resolve_precision
from semmae.utils.rundir import RunLogger, claim_run_dir
from semmae.utils.seed import rng_state, seed_everything, set_rng_state

NO_BAD_STEP = 2**62  # sentinel of the non-finite-loss tracker
AUGMENT_STREAM = 0xA5  # seeds the packed-batch crops/flips apart from the masks of the same (step, shard)


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


def plan_run(cfg: PretrainConfig, world_size: int, num_images: int) -> RunPlan:
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


def build_strategy(cfg: PretrainConfig, has_parts: bool | None = None):
    """The masking strategy; refuses a part-guided one (or ``--fg-keep < 1``) without part maps (``--parts``,
    or a pack made with ``--parts``: ``has_parts``)."""
    from semmae.masking import build_masking

    has_parts = bool(cfg.parts) if has_parts is None else has_parts

    try:
        strategy = build_masking(cfg.masking, mask_ratio=cfg.mask_ratio, gamma=cfg.gamma)
    except ValueError as e:
        raise UserError(f"--masking {cfg.masking}: {e}") from None
    if strategy.needs_parts and not has_parts:
        raise UserError(
            f"masking '{cfg.masking}' is part-guided and needs a part cache: pass --parts CACHE "
            f"(from `semmae parts export`; for a pack, `semmae data pack --parts CACHE`), or use a part-free "
            f"strategy ({PART_FREE_HINT})"
        )
    if cfg.fg_keep < 1 and not has_parts:
        raise UserError(f"--fg-keep {cfg.fg_keep} keeps the most-foreground patches and needs --parts CACHE")
    return strategy


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class PackedBatches(Dataset):
    """A pack read a micro-batch at a time: ``batches[[(epoch, index), ...]]`` -> the raw batch of
    :meth:`~semmae.data.packed.PackedImages.get_batch` (augmented later, on the device, by the engine)."""

    def __init__(self, pack):
        self.pack = pack

    def __len__(self) -> int:
        return len(self.pack)

    def __getitem__(self, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        return self.pack.get_batch([i for _, i in keys])


class Pretrainer:
    """Holds the state of one pretraining run; :meth:`run` trains until the end or ``--max-steps``."""

    def __init__(self, cfg: PretrainConfig):
        from semmae.data.packed import is_pack, read_pack_manifest

        self.cfg = cfg
        self.packed = is_pack(cfg.data)
        has_parts = bool(read_pack_manifest(cfg.data).get("parts")) if self.packed else None
        self.strategy = build_strategy(cfg, has_parts)  # fail fast, before touching data
        want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.dist = du.init_distributed(want)
        self.device = du.resolve_device(want, self.dist)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.is_main = self.dist.is_main
        # the run folder is ours (or the run is refused) before anything is built; nothing is written into it
        # until every check below, the resume checkpoint's included, has passed
        self.run_dir = claim_run_dir(
            cfg.out,
            "pretrain",
            resume=bool(cfg.resume),
            overwrite=cfg.overwrite,
            enabled=self.is_main,
            resume_hint="--resume auto",
        )
        try:
            self._build()
        except BaseException as e:
            self.run_dir.__exit__(type(e), e, None)
            raise

    def _build(self) -> None:
        from semmae.data.pretrain_dataset import PartImageDataset
        from semmae.models import create_model

        cfg = self.cfg
        seed_everything(cfg.seed, 0)  # identical initial weights on every rank
        self.overrides = cfg.model_overrides()
        try:
            model = create_model(cfg.model, **self.overrides)
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"--model {cfg.model}: {e}") from None
        self.model_config = model.config_dict()
        self.patch_size = int(self.model_config["patch_size"])
        model.to(self.device)
        self.model_core = model
        seed_everything(cfg.seed, self.dist.rank)

        scale = tuple(cfg.crop_scale) if cfg.augment == "crop-flip" else None  # flip: resize only
        self.augment = None  # packed data: crops/flips on whole batches (semmae.data.batch_augment)
        if self.packed:
            self.dataset = self._open_pack(scale)
            self.no_part_id = self.dataset.no_part_id
        else:
            self.dataset = PartImageDataset(
                cfg.data,
                cfg.parts,
                img_size=cfg.img_size,
                patch_size=self.patch_size,
                scale=scale,
                hflip=cfg.hflip,
                skip_bad_images=cfg.skip_bad_images,
            )
            self.no_part_id = self.dataset.cache.no_part_id if self.dataset.cache is not None else None
        self.plan = plan_run(cfg, self.dist.world_size, len(self.dataset))
        p = self.plan
        self.lr_schedule = cosine_schedule(p.lr, cfg.min_lr, p.total_steps, p.warmup_steps)
        self.optimizer = build_optimizer(model, p.lr, cfg.weight_decay, tuple(cfg.betas))
        self.scaler = LossScaler(self.precision)
        self.ckpts = CheckpointManager(cfg.out, cfg.keep_last)
        self.step = 0
        self._saved_step = -1
        self.skipped_images = 0  # unreadable files passed over in this process (--skip-bad-images)
        self._last_vis: tuple | None = None

        self.sampler = StepSampler(
            self.dataset,
            p.batch_size,
            p.accum_iter,
            num_replicas=p.world_size,
            rank=self.dist.rank,
            seed=cfg.seed,
        )
        workers = self.num_workers = self._num_workers()
        if self.packed:  # one item = one micro-batch, copied out of the memory-mapped shards
            items, batching = (
                PackedBatches(self.dataset),
                dict(batch_size=None, sampler=BatchSampler(self.sampler, p.batch_size, drop_last=False)),
            )
        else:
            items, batching = (
                SeededItems(self.dataset, cfg.seed),
                dict(batch_size=p.batch_size, sampler=self.sampler, drop_last=False),
            )
        self.loader = DataLoader(
            items,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=lower_priority if parse_num_workers(cfg.num_workers) is None else None,
            **batching,
        )
        self.mask_gen = torch.Generator(device=self.device)
        self.resumed_from = self._maybe_resume()
        # a continued run drops log records past its checkpoint's step: they are logged again from here
        self.logger: RunLogger = self.run_dir.start(cfg, keep_log_until=self.step if cfg.resume else None)

        self.model: torch.nn.Module = model
        if p.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)

    def _open_pack(self, scale: tuple[float, float] | None):
        from semmae.data.batch_augment import BatchPartAugment
        from semmae.data.packed import PackedImages

        cfg = self.cfg
        if cfg.parts:
            raise UserError(
                f"--data {cfg.data} is a pack, which carries its own part cells: drop --parts (to use another "
                "cache, repack with `semmae data pack --parts CACHE`)"
            )
        pack = PackedImages.open(cfg.data)
        grid = cfg.img_size // self.patch_size
        if pack.grid is not None and pack.grid != grid:
            raise UserError(
                f"pack {cfg.data} holds part cells on a {pack.grid}x{pack.grid} grid, the model's patch grid is "
                f"{grid}x{grid} ({cfg.img_size} px / patch {self.patch_size}); repack it from a cache exported "
                f"with `semmae parts export --grid {grid}`"
            )
        self.augment = BatchPartAugment(
            cfg.img_size, self.patch_size, pack.side, scale=scale, hflip=cfg.hflip, num_parts=pack.num_parts
        )
        return pack

    def _num_workers(self) -> int:
        n = parse_num_workers(self.cfg.num_workers)
        if n is None:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            n = auto_num_workers(self.packed, self.device.type, local_world_size=local)
            if self.is_main:
                print(f"semmae pretrain: --num-workers auto -> {n} per rank", flush=True)
        return n

    def _prepare(self, batch: dict[str, torch.Tensor], step: int, shard: int) -> dict[str, torch.Tensor]:
        """A packed micro-batch -> model inputs: crops/flips drawn from ``(seed, step, shard)`` (so they do not
        depend on the world, like the masks) and applied on the device. Folder batches pass through."""
        if self.augment is None:
            return batch
        gen = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step, shard, AUGMENT_STREAM))
        raw = {k: batch[k].to(self.device, non_blocking=True) for k in ("pixels", "codes") if k in batch}
        out = self.augment({**raw, "size": batch["size"]}, gen)
        return {**out, "label": batch["label"], "index": batch["index"]}

    # ------------------------------------------------------------------------------------------ checkpoints
    def _maybe_resume(self) -> Path | None:
        say = (lambda msg: print(msg, flush=True)) if self.is_main else (lambda msg: None)
        found = load_resume(
            self.cfg.resume, self.cfg.out, say, "pretrain"
        )  # auto: a damaged newer one is skipped
        if found is None:
            return None
        path, ckpt = found
        saved_eff = ckpt["sampler"].get("effective_batch")
        if saved_eff is not None and saved_eff != self.plan.effective_batch:
            raise UserError(
                f"--resume {path}: it was trained with effective batch {saved_eff}, this run has "
                f"{self.plan.effective_batch}; keep batch x accum x world size the same to resume"
            )
        try:
            self.model_core.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as e:
            raise UserError(
                f"--resume {path}: model does not match --model {self.cfg.model}: {str(e).splitlines()[0]}"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = self._saved_step = int(ckpt["step"])
        rngs = ckpt["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        if self.is_main:
            print(
                f"semmae pretrain: resumed from {path} at step {self.step} (epoch {ckpt['epoch']})",
                flush=True,
            )
        return path

    def checkpoint(self) -> Path | None:
        """Save on rank 0 (every rank contributes its RNG state). Collective: call on all ranks."""
        rngs = du.all_gather_object(rng_state())
        self._saved_step = self.step
        if not self.is_main:
            return None
        p = self.plan
        state = {
            "model": self.model_core.state_dict(),
            "model_config": self.model_config,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.step // p.steps_per_epoch,
            "step": self.step,
            "config": config_to_dict(self.cfg),
            "rng": rngs,
            "sampler": {
                "epoch": self.step // p.steps_per_epoch,
                "step_in_epoch": self.step % p.steps_per_epoch,
                "seed": self.cfg.seed,
                "effective_batch": p.effective_batch,
                "steps_per_epoch": p.steps_per_epoch,
            },
        }
        return self.ckpts.save(state)

    def _check_finite(self, bad_step: torch.Tensor) -> None:
        """Stop all ranks together when any rank saw a non-finite loss (one small all-reduce, at log steps)."""
        first_bad = int(du.all_reduce_min(bad_step).item())
        if first_bad != NO_BAD_STEP:
            last = self.ckpts.latest()
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                f"the loss became non-finite at step {first_bad} (epoch {first_bad // self.plan.steps_per_epoch}); "
                f"{kept}. Lower --blr, enable --clip-grad, or use --precision bf16/fp32"
            )

    # ---------------------------------------------------------------------------------------------- training
    def _masks(self, batch: dict[str, torch.Tensor], step: int, shard: int):
        """``(images, mask, keep_index, part_ids_full)`` for one micro-batch; masks (and the foreground keep's
        tie breaks) are seeded by ``(seed, step, shard)`` with ``shard = rank * accum_iter + micro`` so they do
        not depend on the world."""
        dev = self.device
        imgs = batch["image"].to(dev, non_blocking=True)
        part_ids = full_parts = batch["part_ids"].to(dev, non_blocking=True) if "part_ids" in batch else None
        fg = batch["fg"].to(dev, non_blocking=True) if "fg" in batch else None
        g = self.cfg.img_size // self.patch_size
        grid: tuple[int, int] | int = (g, g)
        keep_index = None
        self.mask_gen.manual_seed(mix_seed(self.cfg.seed, step, shard))
        if self.cfg.fg_keep < 1:
            from semmae.masking import foreground_keep_index

            # ties in the foreground score are broken from the same seeded stream as the mask that follows
            keep_index = foreground_keep_index(fg, self.cfg.fg_keep, self.mask_gen)
            part_ids = part_ids.gather(1, keep_index) if part_ids is not None else None
            fg = fg.gather(1, keep_index)
            grid = keep_index.shape[1]
        mask = self.strategy(
            imgs.shape[0],
            grid,
            progress(step, self.plan.total_steps),
            self.mask_gen,
            part_ids=part_ids,
            fg=fg,
            device=dev,
            no_part_id=self.no_part_id,
        )
        return imgs, mask, keep_index, full_parts

    def run(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.plan
        end = p.total_steps if cfg.max_steps is None else min(p.total_steps, cfg.max_steps)
        if self.is_main:
            print(
                f"semmae pretrain: {len(self.dataset)} images, {p.world_size} rank(s) x batch {p.batch_size} x "
                f"accum {p.accum_iter} = effective batch {p.effective_batch}; base lr {cfg.blr:.3g}, "
                f"effective lr {p.lr:.3g}; {p.steps_per_epoch} steps/epoch, {p.total_steps} steps in all; "
                f"precision {self.precision.name}; device {self.device}",
                flush=True,
            )
        bad_step = torch.full((), NO_BAD_STEP, dtype=torch.long, device=self.device)
        last_loss = float("nan")
        self.model.train()
        while self.step < end:
            epoch, start = divmod(self.step, p.steps_per_epoch)
            last_loss = self._train_epoch(epoch, start, end, bad_step)
            self._check_finite(bad_step)
            if (self.step % p.steps_per_epoch == 0 or self.step == end) and self._saved_step != self.step:
                self.checkpoint()
            finished_epoch = self.step // p.steps_per_epoch
            if self.step % p.steps_per_epoch == 0:
                self._epoch_end(finished_epoch)
        self.logger.close()
        skipped = int(du.all_reduce_sum(torch.tensor(float(self.skipped_images), device=self.device)).item())
        if skipped and self.is_main:
            print(
                f"semmae pretrain: skipped {skipped} unreadable image load(s) (--skip-bad-images); "
                "`semmae data check` lists the files",
                flush=True,
            )
        du.barrier()
        return {
            "skipped_images": skipped,
            "step": self.step,
            "loss": last_loss,
            "out": str(self.cfg.out),
            "checkpoint": str(self.ckpts.latest()) if self.is_main else None,
        }

    def _train_epoch(self, epoch: int, start: int, end: int, bad_step: torch.Tensor) -> float:
        cfg, p = self.cfg, self.plan
        self.sampler.set_position(epoch, start)
        steps_here = min(p.steps_per_epoch, end - epoch * p.steps_per_epoch) - start
        bar = None
        if self.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_here, desc=f"epoch {epoch}", unit="step", dynamic_ncols=True, leave=False)
        window_t, window_steps = time.perf_counter(), 0
        data_s = 0.0  # time this window spent waiting for batches (loader + packed-batch augmentation)
        t_fetch = time.perf_counter()
        step_loss = torch.zeros((), device=self.device)
        loss_value = float("nan")
        micro = 0
        for batch in self.loader:
            step = self.step
            if "skipped" in batch:  # unreadable files passed over with --skip-bad-images
                self.skipped_images += int(batch["skipped"].sum())
            if micro == 0:
                set_lr(self.optimizer, float(self.lr_schedule[step]))
                step_loss.zero_()
            shard = self.dist.rank * p.accum_iter + micro
            batch = self._prepare(batch, step, shard)
            data_s += time.perf_counter() - t_fetch
            imgs, mask, keep_index, part_ids = self._masks(batch, step, shard)
            last_micro = micro == p.accum_iter - 1
            sync = contextlib.nullcontext() if last_micro or p.world_size == 1 else self.model.no_sync()
            with sync:
                with self.precision.autocast():
                    out = self.model(imgs, mask, keep_index=keep_index)
                loss = out["loss"].float()
                step_loss += loss.detach() / p.accum_iter
                grad_norm = self.scaler(
                    loss / p.accum_iter,
                    self.optimizer,
                    self.model_core.parameters,
                    clip_grad=cfg.clip_grad,
                    update=last_micro,
                )
            micro += 1
            if not last_micro:
                t_fetch = time.perf_counter()
                continue
            micro = 0
            self.optimizer.zero_grad(set_to_none=True)
            finite = torch.isfinite(step_loss)
            if (
                grad_norm is not None and not self.scaler.enabled
            ):  # fp16 overflow steps are skipped by the scaler
                finite = finite & torch.isfinite(grad_norm)
            bad_step.copy_(
                torch.where(finite, bad_step, torch.minimum(bad_step, torch.full_like(bad_step, step)))
            )
            self.step += 1
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == end:
                self._check_finite(bad_step)
                loss_value = float(du.all_reduce_mean(step_loss).item())
                now = time.perf_counter()
                ips = window_steps * p.effective_batch / max(now - window_t, 1e-9)
                data_wait = data_s / max(now - window_t, 1e-9)
                window_t, window_steps, data_s = now, 0, 0.0
                alpha = self.strategy.alpha(progress(step, p.total_steps))
                record = dict(
                    epoch=epoch,
                    loss=loss_value,
                    lr=float(self.lr_schedule[step]),
                    alpha=alpha,
                    progress=progress(step, p.total_steps),
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    img_per_s=ips,
                    memory_mb=_memory_mb(self.device),
                    skipped_images=self.skipped_images,
                    data_wait=data_wait,
                )
                self.logger.log(self.step, **record)
                if bar is not None:
                    eta_s = (end - self.step) * p.effective_batch / max(ips, 1e-9)
                    bar.set_postfix(
                        loss=f"{loss_value:.4f}",
                        lr=f"{record['lr']:.2e}",
                        img_s=f"{ips:.0f}",
                        eta=_fmt_eta(eta_s),
                    )
            if (
                cfg.ckpt_every
                and self.step % cfg.ckpt_every == 0
                and self.step % p.steps_per_epoch
                and self.step != end
            ):
                self._check_finite(bad_step)
                self.checkpoint()
            self._last_vis = (imgs, mask, out, part_ids, keep_index)
            t_fetch = time.perf_counter()
            if self.step >= end:
                break
        if bar is not None:
            bar.close()
        return loss_value

    def _epoch_end(self, epoch: int) -> None:
        """After epoch ``epoch`` (1-based count of finished epochs): panel and online kNN every K epochs."""
        cfg = self.cfg
        if cfg.vis_every and epoch % cfg.vis_every == 0 and self.is_main and self._last_vis is not None:
            self._write_panel(epoch)
        if cfg.eval_every and epoch % cfg.eval_every == 0:
            self._online_knn(epoch)

    def _write_panel(self, epoch: int) -> None:
        from semmae.engine.visualize import reconstruction_panel, save_panel

        imgs, mask, out, part_ids, keep_index = self._last_vis
        n = min(self.cfg.vis_images, imgs.shape[0])
        panel = reconstruction_panel(
            imgs[:n],
            mask[:n],
            out["pred"][:n].detach(),
            self.patch_size,
            self.cfg.norm_pix_loss,
            keep_index=keep_index[:n] if keep_index is not None else None,
            part_ids=part_ids[:n] if part_ids is not None else None,
            no_part_id=self.no_part_id,
        )
        save_panel(panel, Path(self.cfg.out) / "vis" / f"epoch{epoch:04d}.png")
        self.logger.add_image("reconstruction", torch.from_numpy(panel).permute(2, 0, 1), self.step)

    def _online_knn(self, epoch: int) -> None:
        from semmae.engine.online_eval import online_knn

        acc = online_knn(self.model_core, self.cfg, self.device, is_main=self.is_main)
        if acc is not None:
            self.logger.log(self.step, epoch=epoch, **acc)
        self.model.train()


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run ``semmae pretrain`` with a resolved config; returns ``{"step", "loss", "out", "checkpoint"}``."""
    try:
        trainer = Pretrainer(cfg)
        with trainer.run_dir:
            try:
                return trainer.run()
            finally:
                trainer.logger.close()
    finally:
        du.cleanup()
