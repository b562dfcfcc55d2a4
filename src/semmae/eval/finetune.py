"""End-to-end fine-tuning (paper Tables 2 and 6; MAE recipe, He et al. 2022 Sec. A.1).

The encoder (global average pool + ``fc_norm`` by default, as MAE) gets a linear head initialised with
std 2e-5, AdamW with layer-wise learning-rate decay (timm's ``param_groups_layer_decay``: block i of d gets
``layer_decay ** (d + 1 - i)`` of the peak lr), stochastic depth, Mixup/CutMix with label smoothing, RandAugment and
random erasing (timm), an optional EMA of the weights, and a cosine schedule with warm-up. Every epoch reports
val top-1/top-5; ``best.pth`` keeps the best epoch's weights, ``checkpoint.pth`` the state to resume from (each
epoch, and at the step where SIGTERM stops the run: the resumed run continues from that step). The loop, its
checkpoints and the stop are the trainer's (:class:`~semmae.engine.epoch_trainer.EpochTrainer`).
The peak lr is ``blr * global_batch / 256``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from semmae.data.randaugment import patch_posterize
from semmae.data.transforms import eval_transform
from semmae.engine.checkpoint import load_states
from semmae.engine.epoch_trainer import EpochTrainer
from semmae.engine.optim import layer_decay_optimizer
from semmae.engine.precision import resolve_precision
from semmae.engine.schedule import cosine_schedule
from semmae.engine.trainer import run_trainer
from semmae.errors import UserError
from semmae.eval.common import (
    ShardSampler,
    all_reduce_sum,
    build_datasets,
    build_encoder_from_config,
    loader,
    shuffled_loader,
    topk_correct,
    write_results,
)
from semmae.eval.config import EvalCommonConfig, FinetuneConfig
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_loading import LoadedEncoder
from semmae.models.encoder_record import EncoderRecord
from semmae.utils.distributed import DistInfo
from semmae.utils.io import atomic_torch_save

FINETUNE_BETAS = (0.9, 0.999)  # MAE's fine-tuning AdamW
BEST_NAME = "best.pth"  # the best epoch's weights, beside checkpoint.pth


def build_classifier(cfg: FinetuneConfig, num_classes: int) -> tuple[nn.Module, LoadedEncoder]:
    """Encoder + zero-mean linear head (std 2e-5, MAE); the encoder comes from any checkpoint layout."""
    loaded = build_encoder_from_config(cfg, global_pool=cfg.global_pool, drop_path_rate=cfg.drop_path)
    model = loaded.model
    model.reset_classifier(num_classes)
    nn.init.trunc_normal_(model.head.weight, std=2e-5)
    nn.init.zeros_(model.head.bias)
    return model, loaded


def run_finetune(cfg: FinetuneConfig) -> dict:
    return run_trainer(Finetuner, cfg)


class Finetuner(EpochTrainer):
    """``semmae finetune`` on the trainer: the classifier's step, its EMA, and each epoch's evaluation."""

    verb = kind = "finetune"

    def build(self) -> None:
        cfg, info, device = self.cfg, self.dist, self.device
        train, self.val = build_datasets(cfg, None, None)
        self.classes = train.classes
        model, self.loaded = build_classifier(cfg, len(train.classes))
        size = self.loaded.record.img_size
        train.transform = patch_posterize(
            create_transform(
                size,
                is_training=True,
                color_jitter=None,
                auto_augment=cfg.auto_augment or None,
                interpolation="bicubic",
                re_prob=cfg.reprob,
                re_mode="pixel",
                re_count=1,
            )
        )
        self.val.transform = eval_transform(size, crop_pct=cfg.crop_pct)
        self.model_core = model.to(device)
        self.ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
        self.model = DistributedDataParallel(model) if info.enabled else model
        self.global_batch = cfg.batch_size * info.world_size
        self.peak_lr = cfg.blr * self.global_batch / 256
        self.optimizer = layer_decay_optimizer(
            model, self.peak_lr, cfg.weight_decay, cfg.layer_decay, FINETUNE_BETAS
        )
        self.mixup, self.criterion = mixing(cfg, len(train.classes))
        if len(train) < self.global_batch:
            raise UserError(
                f"{len(train)} training images are fewer than one global batch ({self.global_batch})"
            )
        self.loader = shuffled_loader(train, cfg.batch_size, cfg, info)
        self.steps_per_epoch = len(self.loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        warmup = cfg.warmup_epochs * self.steps_per_epoch
        self.lr_schedule = cosine_schedule(
            self.peak_lr, cfg.min_lr, self.total_steps, warmup, warmup_offset=1
        )
        self.best = {"top1": -1.0, "top5": 0.0, "epoch": -1}
        self.history: list[dict] = []

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        with self.precision.autocast():
            return {"loss": self.criterion(self.model(x), y)}

    def end_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model_core, step=step)

    def explain(self, step: int) -> str:
        return (
            f"non-finite loss at step {step} (epoch {step // self.steps_per_epoch}); {self.kept()} (lower --blr or "
            "set --clip-grad)"
        )

    # ------------------------------------------------------------------------------------------ checkpoints
    def encoder_record(self) -> EncoderRecord:
        return self.loaded.record

    def model_state(self) -> TrainState:
        ema = self.ema.module.state_dict() if self.ema is not None else None
        return TrainState(model=self.model_core.state_dict(), extra={"ema": ema})

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        load_states(path, ckpt, model=self.model_core)
        if self.ema is not None and ckpt.extra.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt.extra["ema"])
        self.best = ckpt.extra["best"]

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"best": self.best}

    def keep_log_until(self) -> int:
        return (
            self.epoch or -1
        )  # epoch e is logged at step e + 1; a run stopped in epoch 0 logs its start again

    # ---------------------------------------------------------------------------------------------- the run
    def begin_run(self) -> None:
        if self.epoch == 0:
            self.logger.log(0, lr_peak=self.peak_lr, global_batch=self.global_batch, blr=self.cfg.blr)

    def epoch_end(self, epoch: int) -> None:
        sums, steps = self.epoch_sums, self.epoch_steps
        cfg, info, device = self.cfg, self.dist, self.device
        metrics = evaluate(self.model_core, self.val, cfg, device, info)
        record = {
            "train_loss": sums["loss"].item() / max(steps, 1),
            "val_top1": metrics["top1"],
            "val_top5": metrics["top5"],
            "lr": self.optimizer.param_groups[-1]["lr"],
        }
        if self.ema is not None:
            ema_m = evaluate(self.ema.module, self.val, cfg, device, info)
            record.update(ema_top1=ema_m["top1"], ema_top5=ema_m["top5"])
        self.logger.log(epoch + 1, **record)
        self.history.append({"epoch": epoch, **record})
        if metrics["top1"] > self.best["top1"]:
            self.best = {"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch}
            if info.is_main:  # the one best file: the weights of the best epoch, an encoder checkpoint too
                best = TrainState(
                    kind=self.kind,
                    model=self.model_core.state_dict(),
                    step=self.step,
                    epoch=self.epoch,
                    encoder=self.encoder_record(),
                    extra={"metrics": metrics, "classes": self.classes},
                )
                atomic_torch_save(best.to_dict(), Path(cfg.out) / BEST_NAME)

    def end_run(self) -> dict:
        last = self.history[-1] if self.history else {}
        results = {
            "top1": self.best["top1"],
            "top5": self.best["top5"],
            "best_epoch": self.best["epoch"],
            "last_top1": last.get("val_top1"),
            "last_top5": last.get("val_top5"),
            "num_classes": len(self.classes),
            "peak_lr": self.peak_lr,
        }
        if self.ema is not None:
            results.update(ema_top1=last.get("ema_top1"), ema_top5=last.get("ema_top5"))
        if self.is_main:
            results = write_results(self.cfg.out, self.cfg, self.loaded, results)
        return results


def mixing(cfg: FinetuneConfig, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """Mixup/CutMix (timm) with the soft-target loss, else label smoothing, else plain cross-entropy."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob,
            label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(cfg.smoothing)
    return None, nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate(model: nn.Module, dataset, cfg: EvalCommonConfig, device: torch.device, info: DistInfo) -> dict:
    """Exact top-1/top-5 (percent) over the whole val set, sharded across ranks without padding."""
    model.eval()
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    c1 = c5 = 0
    for batch in loader(dataset, cfg.batch_size, cfg.num_workers, sampler=sampler):
        with resolve_precision(cfg.precision, device).autocast():
            logits = model(batch["image"].to(device))
        a, b = topk_correct(logits.float(), batch["label"].to(device))
        c1, c5 = c1 + a, c5 + b
    s1, s5 = all_reduce_sum([c1, c5], device)
    n = max(len(dataset), 1)
    return {"top1": s1 * 100.0 / n, "top5": s5 * 100.0 / n}
