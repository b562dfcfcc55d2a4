"""``semmae bootstrap``: the self-distillation stage on the shared step loop (``docs/bootstrap.md``).

One optimiser step consumes ``world_size x accum_iter x batch_size`` images, each as 2 global + ``n`` local crops
(:class:`~semmae.bootstrap.views.MultiCropTransform`, seeded per (seed, epoch, index) by the engine's
:class:`~semmae.engine.sampler.SeededItems`). The teacher encodes the unmasked global crops; the student (the only
module under DDP) encodes the masked global crops and the local crops in one call. Loss = class-token loss +
``patch_weight`` x masked-patch loss (:mod:`semmae.bootstrap.loss`). After each optimiser step the teacher moves
towards the student with the momentum of that step. Learning rate, weight decay, teacher momentum and teacher
temperature are per-iteration arrays indexed by the global step (:mod:`semmae.engine.schedule`), so a resumed
run reads the same values at the same step; checkpoints hold the teacher's encoder under ``model`` (timm key
names: every encoder loader accepts it) plus everything a resume needs, as plain data. The loop itself, its
checkpoints and logging are :class:`~semmae.engine.step_trainer.StepTrainer`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from semmae.bootstrap.config import BootstrapConfig
from semmae.bootstrap.loss import Centering, class_token_loss, masked_patch_loss
from semmae.bootstrap.model import Student, backbone_spec, ema_update_, teacher_from_student
from semmae.bootstrap.views import MultiCropTransform, random_patch_masks
from semmae.engine.checkpoint import mismatch
from semmae.engine.optim import build_optimizer
from semmae.engine.schedule import cosine_schedule, warmup_constant_schedule
from semmae.engine.step_trainer import StepTrainer, plan_run
from semmae.engine.trainer import run_trainer
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_record import EncoderRecord
from semmae.utils.seed import mix_seed, seed_everything

TRAINER = "bootstrap"  # model_config["trainer"] of this stage's checkpoints


class Bootstrapper(StepTrainer):
    """One self-distillation run; :meth:`run` trains until the end or ``--max-steps``."""

    verb = "bootstrap"
    kind = "bootstrap"
    checkpoint_note = "encoder checkpoint {checkpoint} (use it as --encoder-checkpoint / --checkpoint)"
    loss_keys = ("loss", "cls", "patch")

    @classmethod
    def preflight(cls, cfg: BootstrapConfig) -> None:
        checked_spec(cfg)  # fail fast

    def build(self) -> None:
        from semmae.data.folder import ImageFolderDataset

        cfg = self.cfg
        self.spec = checked_spec(cfg)
        self.dataset = ImageFolderDataset(
            cfg.data,
            transform=MultiCropTransform(
                cfg.img_size, cfg.local_size, cfg.local_crops, tuple(cfg.global_scale), tuple(cfg.local_scale)
            ),
            skip_bad_images=cfg.skip_bad_images,
        )
        if len(self.dataset) == 0:
            raise UserError(f"--data {cfg.data}: no images found")
        self.plan = p = plan_run(cfg, self.dist.world_size, len(self.dataset))

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
        self.temp_schedule = warmup_constant_schedule(
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            p.total_steps,
            int(round(cfg.warmup_teacher_temp_epochs * p.steps_per_epoch)),
        )
        self.freeze_last_steps = int(round(cfg.freeze_last_layer * p.steps_per_epoch))
        self.optimizer = build_optimizer(student, p.lr, cfg.weight_decay, tuple(cfg.betas))
        self._freeze_last = False
        for param in student.head.last_layer_parameters():  # DINO: no prototype updates in the first epoch(s)
            param.register_hook(lambda grad: torch.zeros_like(grad) if self._freeze_last else grad)

    def describe(self) -> str:
        cfg = self.cfg
        views = f"2 x {cfg.img_size} px + {cfg.local_crops} x {cfg.local_size} px"
        objective = self.model_config()["objective"]
        return f"semmae bootstrap ({objective}, {cfg.model}): {len(self.dataset)} images ({views})"

    # ------------------------------------------------------------------------------------------ checkpoints
    def model_config(self) -> dict[str, Any]:
        return {**self.spec, "trainer": TRAINER, "objective": "ibot" if self.use_masks else "dino"}

    def model_state(self) -> TrainState:
        return TrainState(
            model=self.teacher.backbone.state_dict(),  # the encoder: timm VisionTransformer key names
            model_config=self.model_config(),
            encoder=EncoderRecord.from_mae_config(self.model_config()),
            extra={
                "student": self.model_core.state_dict(),
                "teacher_head": self.teacher.head.state_dict(),
                "centers": {"cls": self.cls_center.state_dict(), "patch": self.patch_center.state_dict()},
            },
        )

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        if (ckpt.model_config or {}).get("trainer") != TRAINER:
            raise UserError(
                f"--resume {path}: not a `semmae bootstrap` checkpoint (a `semmae pretrain` one?)"
            )
        try:
            self.model_core.load_state_dict(ckpt.extra["student"], strict=True)
            self.teacher.backbone.load_state_dict(ckpt.model, strict=True)
            self.teacher.head.load_state_dict(ckpt.extra["teacher_head"], strict=True)
            self.cls_center.load_state_dict(ckpt.extra["centers"]["cls"])
            self.patch_center.load_state_dict(ckpt.extra["centers"]["patch"])
        except RuntimeError as e:
            raise UserError(
                f"--resume {path}: it does not match this run's model/head/objective: {mismatch(e)}"
            ) from None

    # ---------------------------------------------------------------------------------------------- training
    def begin_step(self, step: int) -> None:
        # the weight decay follows self.wd_schedule (set by the trainer with the learning rate)
        self._freeze_last = step < self.freeze_last_steps

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss", "cls", "patch"}`` of one micro-batch; updates the centres with the teacher's outputs."""
        cfg, dev, step, shard = self.cfg, self.device, self.step, self.shard
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
        # the student's drop path draws from (seed, step, shard) alone, so neither the data loader's use of the
        # global RNG nor a resume changes it (the teacher draws nothing: no drop path, no dropout)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(mix_seed(cfg.seed, step, shard, 1))
            return self.forward_step(globals_, locals_, mask, float(self.temp_schedule[step]))

    def forward_step(
        self, globals_: torch.Tensor, locals_: torch.Tensor | None, mask: torch.Tensor | None, temp: float
    ) -> dict[str, torch.Tensor]:
        """Teacher, student, losses and centre updates of one micro-batch (``globals_ [2B, 3, S, S]`` view-major,
        ``locals_ [nB, 3, s, s]``, ``mask`` bool ``[2B, L]``, teacher temperature ``temp``). Fixed shapes whatever
        the mask: the head runs on every patch and the mask weights the patch loss and the patch centre, so this
        reads nothing back from the device (``torch.compile(fullgraph=True)`` traces it whole; tested)."""
        cfg = self.cfg
        b = globals_.shape[0] // 2
        with self.precision.autocast():
            with torch.no_grad():
                t = self.teacher(globals_)
                t_patch = self.teacher.head(t["tokens"]) if mask is not None else None  # [2B, L, K]
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
            self.patch_center.update(t_patch, weight=mask)  # the mean over the masked patches
        self.cls_center.update(t["cls"])
        out["loss"] = loss
        return out

    def end_step(self, step: int) -> None:
        ema_update_(self.teacher, self.model_core, float(self.momentum_schedule[step]))

    def log_extras(self, step: int, values: dict[str, float]) -> dict[str, Any]:
        return dict(
            loss_cls=values["cls"],
            loss_patch=values["patch"] if self.use_masks else None,
            weight_decay=float(self.wd_schedule[step]),
            momentum=float(self.momentum_schedule[step]),
            teacher_temp=float(self.temp_schedule[step]),
        )

    def epoch_end(self, epoch: int) -> None:
        """The online kNN evaluates the teacher (the encoder this stage hands on)."""
        if self.cfg.eval_every and (epoch + 1) % self.cfg.eval_every == 0:
            self.online_knn(self.teacher, epoch + 1)


def checked_spec(cfg: BootstrapConfig) -> dict[str, Any]:
    """The backbone's spec; a UserError when ``--local-size`` is not a multiple of its patch size."""
    spec = backbone_spec(cfg.model, cfg.img_size, **cfg.encoder_overrides())
    patch = spec["patch_size"]
    if cfg.local_size % patch:
        raise UserError(f"--local-size {cfg.local_size} is not a multiple of the patch size {patch}")
    return spec


def bootstrap(cfg: BootstrapConfig) -> dict[str, Any]:
    """Run ``semmae bootstrap`` with a resolved config; returns ``{"step", "loss", "out", "checkpoint"}``."""
    return run_trainer(Bootstrapper, cfg)
