"""``semmae bootstrap``: the self-distillation training loop on the engine's machinery (``docs/bootstrap.md``).

One optimiser step consumes ``world_size x accum_iter x batch_size`` images, each as 2 global + ``n`` local crops
(:class:`~semmae.bootstrap.views.MultiCropTransform`, seeded per (seed, epoch, index) by the engine's
:class:`~semmae.engine.sampler.SeededItems`). The teacher encodes the unmasked global crops; the student (the only
module under DDP) encodes the masked global crops and the local crops in one call. Loss = class-token loss +
``patch_weight`` x masked-patch loss (:mod:`semmae.bootstrap.loss`). After each optimiser step the teacher moves
towards the student with the momentum of that step. Learning rate, weight decay, teacher momentum and teacher
temperature are per-iteration arrays indexed by the global step (:mod:`semmae.engine.schedule`), so a resumed
run reads the same values at the same step; checkpoints hold the teacher's encoder under ``model`` (timm key
names: every encoder loader accepts it) plus everything a resume needs, as plain data.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semmae.bootstrap.config import BootstrapConfig
from semmae.bootstrap.loss import Centering, class_token_loss, masked_patch_loss
from semmae.bootstrap.model import Student, backbone_spec, ema_update_, teacher_from_student
from semmae.bootstrap.views import MultiCropTransform, random_patch_masks
from semmae.config import config_to_dict
from semmae.data.loader import DataLoader
from semmae.engine.checkpoint import CheckpointManager, load_resume
from semmae.engine.optim import build_optimizer, set_lr
from semmae.engine.pretrain import NO_BAD_STEP, _fmt_eta, _memory_mb, plan_run
from semmae.engine.sampler import SeededItems, StepSampler, mix_seed
from semmae.engine.schedule import cosine_schedule
from semmae.errors import NonFiniteLossError, UserError
from semmae.utils import distributed as du
from semmae.utils.precision import LossScaler, resolve_precision
from semmae.utils.rundir import RunLogger, claim_run_dir
from semmae.utils.seed import rng_state, seed_everything, set_rng_state

TRAINER = "bootstrap"  # model_config["trainer"] of this stage's checkpoints


def teacher_temp_schedule(start: float, end: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """``float64 [total_steps]``: linear from ``start`` to ``end`` over ``warmup_steps``, then ``end``."""
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    return np.concatenate([np.linspace(start, end, warmup_steps), np.full(total_steps - warmup_steps, end)])


def set_weight_decay(optimizer: torch.optim.Optimizer, wd: float) -> None:
    """Set the decay of every group that decays (``wd_scale`` 1; norms, biases and tokens keep 0)."""
    for g in optimizer.param_groups:
        g["weight_decay"] = wd * g["wd_scale"]


class Bootstrapper:
    """Holds one self-distillation run; :meth:`run` trains until the end or ``--max-steps``."""

    def __init__(self, cfg: BootstrapConfig):
        self.cfg = cfg
        self.spec = backbone_spec(cfg.model, cfg.img_size, **cfg.encoder_overrides())  # fail fast
        patch = self.spec["patch_size"]
        if cfg.local_size % patch:
            raise UserError(f"--local-size {cfg.local_size} is not a multiple of the patch size {patch}")
        want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.dist = du.init_distributed(want)
        self.device = du.resolve_device(want, self.dist)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.is_main = self.dist.is_main
        # the run folder is ours (or the run is refused) before anything is built; nothing is written into it
        # until every check, the resume checkpoint's included, has passed (semmae.utils.rundir)
        self.run_dir = claim_run_dir(
            cfg.out,
            "bootstrap",
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
        from semmae.data.folder import ImageFolderDataset

        cfg = self.cfg
        self.dataset = ImageFolderDataset(
            cfg.data,
            transform=MultiCropTransform(
                cfg.img_size, cfg.local_size, cfg.local_crops, tuple(cfg.global_scale), tuple(cfg.local_scale)
            ),
            skip_bad_images=cfg.skip_bad_images,
        )
        if len(self.dataset) == 0:
            raise UserError(f"--data {cfg.data}: no images found")
        self.plan = plan_run(cfg, self.dist.world_size, len(self.dataset))
        p = self.plan

        seed_everything(cfg.seed, 0)  # identical initial weights on every rank
        self.head_args = dict(
            out_dim=cfg.out_dim,
            hidden_dim=cfg.head_hidden_dim,
            bottleneck_dim=cfg.head_bottleneck_dim,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.use_masks = cfg.ibot and cfg.patch_weight > 0
        student = Student(self.spec, self.head_args, cfg.drop_path, masked_embed=self.use_masks)
        self.teacher = teacher_from_student(student, self.spec, self.head_args).to(self.device)
        student.to(self.device)
        self.model_core = student
        seed_everything(cfg.seed, self.dist.rank)
        self.cls_center = Centering(cfg.out_dim, cfg.center_momentum).to(self.device)
        self.patch_center = Centering(cfg.out_dim, cfg.center_momentum).to(self.device)

        self.lr_schedule = cosine_schedule(p.lr, cfg.min_lr, p.total_steps, p.warmup_steps)
        self.wd_schedule = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, p.total_steps)
        self.momentum_schedule = cosine_schedule(cfg.momentum, 1.0, p.total_steps)
        self.temp_schedule = teacher_temp_schedule(
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            p.total_steps,
            int(round(cfg.warmup_teacher_temp_epochs * p.steps_per_epoch)),
        )
        self.freeze_last_steps = int(round(cfg.freeze_last_layer * p.steps_per_epoch))
        self.optimizer = build_optimizer(student, p.lr, cfg.weight_decay, tuple(cfg.betas))
        for g in self.optimizer.param_groups:
            g["wd_scale"] = 1.0 if g["weight_decay"] > 0 else 0.0
        self._freeze_last = False
        for param in student.head.last_layer_parameters():  # DINO: no prototype updates in the first epoch(s)
            param.register_hook(lambda grad: torch.zeros_like(grad) if self._freeze_last else grad)
        self.scaler = LossScaler(self.precision)
        self.ckpts = CheckpointManager(cfg.out, cfg.keep_last)
        self.step = 0
        self._saved_step = -1
        self.skipped_images = 0

        self.sampler = StepSampler(
            self.dataset,
            p.batch_size,
            p.accum_iter,
            num_replicas=p.world_size,
            rank=self.dist.rank,
            seed=cfg.seed,
        )
        workers = cfg.num_workers
        self.loader = DataLoader(
            SeededItems(self.dataset, cfg.seed),
            batch_size=p.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )
        self.mask_gen = torch.Generator(device=self.device)
        self.resumed_from = self._maybe_resume()
        # a continued run drops log records past its checkpoint's step: they are logged again from here
        self.logger: RunLogger = self.run_dir.start(cfg, keep_log_until=self.step if cfg.resume else None)

        self.model: torch.nn.Module = student
        if p.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(student, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)

    # ------------------------------------------------------------------------------------------ checkpoints
    def model_config(self) -> dict[str, Any]:
        return {**self.spec, "trainer": TRAINER, "objective": "ibot" if self.use_masks else "dino"}

    def _maybe_resume(self) -> Path | None:
        say = (lambda msg: print(msg, flush=True)) if self.is_main else (lambda msg: None)
        found = load_resume(
            self.cfg.resume, self.cfg.out, say, "bootstrap"
        )  # auto: a damaged newer one is skipped
        if found is None:
            return None
        path, ckpt = found
        if ckpt["model_config"].get("trainer") != TRAINER:
            raise UserError(
                f"--resume {path}: not a `semmae bootstrap` checkpoint (a `semmae pretrain` one?)"
            )
        saved_eff = ckpt["sampler"].get("effective_batch")
        if saved_eff != self.plan.effective_batch:
            raise UserError(
                f"--resume {path}: it was trained with effective batch {saved_eff}, this run has "
                f"{self.plan.effective_batch}; keep batch x accum x world size the same to resume"
            )
        try:
            self.model_core.load_state_dict(ckpt["student"], strict=True)
            self.teacher.backbone.load_state_dict(ckpt["model"], strict=True)
            self.teacher.head.load_state_dict(ckpt["teacher_head"], strict=True)
            self.cls_center.load_state_dict(ckpt["centers"]["cls"])
            self.patch_center.load_state_dict(ckpt["centers"]["patch"])
        except RuntimeError as e:
            raise UserError(
                f"--resume {path}: it does not match this run's model/head/objective: {str(e).splitlines()[0]}"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = self._saved_step = int(ckpt["step"])
        rngs = ckpt["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        if self.is_main:
            print(
                f"semmae bootstrap: resumed from {path} at step {self.step} (epoch {ckpt['epoch']})",
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
            "model": self.teacher.backbone.state_dict(),  # the encoder: timm VisionTransformer key names
            "model_config": self.model_config(),
            "student": self.model_core.state_dict(),
            "teacher_head": self.teacher.head.state_dict(),
            "centers": {"cls": self.cls_center.state_dict(), "patch": self.patch_center.state_dict()},
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
        first_bad = int(du.all_reduce_min(bad_step).item())
        if first_bad != NO_BAD_STEP:
            last = self.ckpts.latest()
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                f"the loss became non-finite at step {first_bad}; {kept}. Lower --blr, keep --clip-grad, "
                "or use --precision bf16/fp32"
            )

    # ---------------------------------------------------------------------------------------------- training
    def _losses(self, batch: dict[str, Any], step: int, shard: int) -> dict[str, torch.Tensor]:
        """``{"loss", "cls", "patch"}`` of one micro-batch; updates the centres with the teacher's outputs."""
        cfg, dev = self.cfg, self.device
        views = batch["image"]
        g = views["global"].to(dev, non_blocking=True)  # [B, 2, 3, S, S]
        b = g.shape[0]
        globals_ = g.transpose(0, 1).flatten(0, 1)  # view-major: [2B, 3, S, S]
        loc = views["local"]
        locals_ = loc.to(dev, non_blocking=True).transpose(0, 1).flatten(0, 1) if loc.shape[1] else None
        mask = None
        if self.use_masks:
            self.mask_gen.manual_seed(mix_seed(cfg.seed, step, shard))
            grid = cfg.img_size // self.spec["patch_size"]
            mask = random_patch_masks(
                2 * b, grid * grid, cfg.mask_prob, tuple(cfg.mask_ratio), self.mask_gen, dev
            )
        temp = float(self.temp_schedule[step])
        with self.precision.autocast():
            with torch.no_grad():
                t = self.teacher(globals_)
                t_patch = self.teacher.head(t["tokens"][mask]) if mask is not None else None
            # the student's drop path draws from (seed, step, shard) alone, so neither the data loader's use of
            # the global RNG nor a resume changes it
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(mix_seed(cfg.seed, step, shard, 1))
                s = self.model(globals_, locals_, mask)
        out = {
            "cls": class_token_loss(t["cls"], s["cls"], 2, b, self.cls_center.center, temp, cfg.student_temp)
        }
        loss = out["cls"]
        if mask is not None:
            out["patch"] = masked_patch_loss(
                t_patch, s["patch"], mask, self.patch_center.center, temp, cfg.student_temp
            )
            loss = loss + cfg.patch_weight * out["patch"]
            self.patch_center.update(t_patch)
        self.cls_center.update(t["cls"])
        out["loss"] = loss
        return out

    def run(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.plan
        end = p.total_steps if cfg.max_steps is None else min(p.total_steps, cfg.max_steps)
        if self.is_main:
            views = f"2 x {cfg.img_size} px + {cfg.local_crops} x {cfg.local_size} px"
            print(
                f"semmae bootstrap ({self.model_config()['objective']}, {cfg.model}): {len(self.dataset)} images "
                f"({views}), {p.world_size} rank(s) x batch {p.batch_size} x accum {p.accum_iter} = effective "
                f"batch {p.effective_batch}; base lr {cfg.blr:.3g}, effective lr {p.lr:.3g}; "
                f"{p.steps_per_epoch} steps/epoch, {p.total_steps} steps in all; precision "
                f"{self.precision.name}; device {self.device}",
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
            finished = self.step // p.steps_per_epoch
            if self.step % p.steps_per_epoch == 0 and cfg.eval_every and finished % cfg.eval_every == 0:
                self._online_knn(finished)
        self.logger.close()
        skipped = int(du.all_reduce_sum(torch.tensor(float(self.skipped_images), device=self.device)).item())
        if skipped and self.is_main:
            print(
                f"semmae bootstrap: skipped {skipped} unreadable image load(s) (--skip-bad-images)",
                flush=True,
            )
        du.barrier()
        return {
            "skipped_images": skipped,
            "step": self.step,
            "loss": last_loss,
            "out": str(cfg.out),
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
        sums = {k: torch.zeros((), device=self.device) for k in ("loss", "cls", "patch")}
        loss_value = float("nan")
        micro = 0
        for batch in self.loader:
            step = self.step
            if "skipped" in batch:
                self.skipped_images += int(batch["skipped"].sum())
            if micro == 0:
                set_lr(self.optimizer, float(self.lr_schedule[step]))
                set_weight_decay(self.optimizer, float(self.wd_schedule[step]))
                self._freeze_last = step < self.freeze_last_steps
                for v in sums.values():
                    v.zero_()
            last_micro = micro == p.accum_iter - 1
            sync = contextlib.nullcontext() if last_micro or p.world_size == 1 else self.model.no_sync()
            with sync:
                losses = self._losses(batch, step, self.dist.rank * p.accum_iter + micro)
                for k, v in losses.items():
                    sums[k] += v.detach().float() / p.accum_iter
                grad_norm = self.scaler(
                    losses["loss"] / p.accum_iter,
                    self.optimizer,
                    self.model_core.parameters,
                    clip_grad=cfg.clip_grad,
                    update=last_micro,
                )
            micro += 1
            if not last_micro:
                continue
            micro = 0
            self.optimizer.zero_grad(set_to_none=True)
            ema_update_(self.teacher, self.model_core, float(self.momentum_schedule[step]))
            finite = torch.isfinite(sums["loss"])
            if grad_norm is not None and not self.scaler.enabled:
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
                values = {k: float(du.all_reduce_mean(v).item()) for k, v in sums.items()}
                loss_value = values["loss"]
                now = time.perf_counter()
                ips = window_steps * p.effective_batch / max(now - window_t, 1e-9)
                window_t, window_steps = now, 0
                record = dict(
                    epoch=epoch,
                    loss=loss_value,
                    loss_cls=values["cls"],
                    loss_patch=values["patch"] if self.use_masks else None,
                    lr=float(self.lr_schedule[step]),
                    weight_decay=float(self.wd_schedule[step]),
                    momentum=float(self.momentum_schedule[step]),
                    teacher_temp=float(self.temp_schedule[step]),
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    img_per_s=ips,
                    memory_mb=_memory_mb(self.device),
                    skipped_images=self.skipped_images,
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
            if self.step >= end:
                break
        if bar is not None:
            bar.close()
        return loss_value

    def _online_knn(self, epoch: int) -> None:
        from semmae.engine.online_eval import online_knn

        acc = online_knn(self.teacher, self.cfg, self.device, is_main=self.is_main)
        if acc is not None:
            self.logger.log(self.step, epoch=epoch, **acc)


def bootstrap(cfg: BootstrapConfig) -> dict[str, Any]:
    """Run ``semmae bootstrap`` with a resolved config; returns ``{"step", "loss", "out", "checkpoint"}``."""
    try:
        trainer = Bootstrapper(cfg)
        with trainer.run_dir:
            try:
                return trainer.run()
            finally:
                trainer.logger.close()
    finally:
        du.cleanup()
