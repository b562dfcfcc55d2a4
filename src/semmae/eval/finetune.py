"""End-to-end fine-tuning (paper Tables 2 and 6; MAE recipe, He et al. 2022 Sec. A.1).

The encoder (global average pool + ``fc_norm`` by default, as MAE) gets a linear head initialised with
std 2e-5, AdamW with layer-wise learning-rate decay (timm's ``param_groups_layer_decay``: block i of d gets
``layer_decay ** (d + 1 - i)`` of the peak lr), stochastic depth, Mixup/CutMix with label smoothing, RandAugment and
random erasing (timm), an optional EMA of the weights, and a cosine schedule with warm-up. Every epoch reports
val top-1/top-5; ``best.pth`` keeps the best epoch's weights, ``checkpoint.pth`` the state to resume from (each
epoch, and at the step where SIGTERM stops the run: the resumed run continues from that step,
:mod:`semmae.engine.termination`).
The peak lr is ``blr * global_batch / 256``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from semmae.data.randaugment import patch_posterize
from semmae.data.transforms import eval_transform
from semmae.engine.checkpoint import restore
from semmae.engine.epoch_loop import scheduled_batches
from semmae.engine.nonfinite import NonFiniteWatch, kept_checkpoint
from semmae.engine.optim import layer_decay_optimizer
from semmae.engine.precision import LossScaler, resolve_precision
from semmae.engine.run_options import (
    continues,
    resume_file,
)
from semmae.engine.schedule import cosine_schedule
from semmae.engine.stage_run import run_claimed
from semmae.engine.termination import sigterm_requests, stopped
from semmae.errors import UserError
from semmae.eval.common import (
    EvalCommonConfig,
    ShardSampler,
    all_reduce_sum,
    build_datasets,
    build_encoder_from_config,
    loader,
    topk_correct,
    write_results,
)
from semmae.eval.config import FinetuneConfig  # noqa: F401 - its home is the torch-free eval.config
from semmae.models.encoder_loading import LoadedEncoder
from semmae.utils.distributed import DistInfo
from semmae.utils.io import atomic_torch_save
from semmae.utils.rundir import RunDir
from semmae.utils.seed import rng_state, seed_everything, set_rng_state

FINETUNE_BETAS = (0.9, 0.999)  # MAE's fine-tuning AdamW


def build_classifier(cfg: FinetuneConfig, num_classes: int) -> tuple[nn.Module, LoadedEncoder]:
    """Encoder + zero-mean linear head (std 2e-5, MAE); the encoder comes from any checkpoint layout."""
    loaded = build_encoder_from_config(cfg, global_pool=cfg.global_pool, drop_path_rate=cfg.drop_path)
    model = loaded.model
    model.reset_classifier(num_classes)
    nn.init.trunc_normal_(model.head.weight, std=2e-5)
    nn.init.zeros_(model.head.bias)
    return model, loaded


def run_finetune(cfg: FinetuneConfig) -> dict:
    return run_claimed(cfg, "finetune", _run)


def _run(cfg: FinetuneConfig, info: DistInfo, device, run_dir: RunDir) -> dict:
    continuing = continues(cfg)
    seed_everything(cfg.seed, info.rank)
    train, val = build_datasets(cfg, None, None)
    num_classes = len(train.classes)
    model, loaded = build_classifier(cfg, num_classes)
    size = loaded.record.img_size
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
    val.transform = eval_transform(size, crop_pct=cfg.crop_pct)
    model.to(device)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    ddp = DistributedDataParallel(model) if info.enabled else model
    global_batch = cfg.batch_size * info.world_size
    peak_lr = cfg.blr * global_batch / 256
    opt = layer_decay_optimizer(model, peak_lr, cfg.weight_decay, cfg.layer_decay, FINETUNE_BETAS)
    precision = resolve_precision(cfg.precision, device)
    scaler, watch = LossScaler(precision), NonFiniteWatch(device)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob,
            label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()
    if len(train) < cfg.batch_size * info.world_size:
        raise UserError(f"{len(train)} training images are fewer than one global batch ({global_batch})")
    sampler = (
        DistributedSampler(train, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        if info.enabled
        else None
    )
    g = torch.Generator().manual_seed(cfg.seed)
    train_loader = loader(
        train, cfg.batch_size, cfg.num_workers, sampler=sampler, shuffle=True, drop_last=True, generator=g
    )
    steps_per_epoch = len(train_loader)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    lr_schedule = cosine_schedule(peak_lr, cfg.min_lr, total, warmup, warmup_offset=1)
    out = Path(cfg.out)
    start_epoch, start_step, partial, rng_at_stop, best = (
        0,
        0,
        None,
        None,
        {"top1": -1.0, "top5": 0.0, "epoch": -1},
    )
    resume_from = resume_file(cfg.resume, out / "checkpoint.pth", cfg.overwrite)
    if resume_from is not None:
        state = restore(resume_from, model=model, optimizer=opt)
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        if state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, best = int(state["epoch"]) + 1, state["best"]
        # a run stopped by SIGTERM mid-epoch: that epoch's order (and, alone, its RNG) again, from its step
        start_step, partial = int(state.get("step_in_epoch", 0)), state.get("partial")
        if state.get("loader_rng") is not None:
            g.set_state(state["loader_rng"])
        if state.get("rng") is not None and info.world_size == 1:
            set_rng_state(state["rng"])
            rng_at_stop = state.get("rng_at_stop")
    # epoch e is logged at step e + 1: a continued run drops the records after its checkpoint's epoch
    logger = run_dir.start(cfg, keep_log_until=(start_epoch or -1) if continuing else None)

    def save(done_epoch: int, step_in_epoch: int = 0, epoch_start=None, running=None, n: int = 0) -> None:
        """``checkpoint.pth``: after epoch ``done_epoch``, plus ``step_in_epoch`` steps of the next one (whose
        start's loader generator and RNG state ``epoch_start`` holds) when SIGTERM stopped the run there."""
        loader_rng, rng = epoch_start if epoch_start is not None else (g.get_state(), rng_state())
        if info.is_main:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": done_epoch,
                    "step_in_epoch": step_in_epoch,
                    "partial": {"loss_sum": float(running), "n": n} if step_in_epoch else None,
                    "loader_rng": loader_rng,
                    "rng": rng,
                    "rng_at_stop": rng_state() if step_in_epoch else None,
                    "best": best,
                    "ema": ema.module.state_dict() if ema is not None else None,
                },
                out / "checkpoint.pth",
            )

    history = []
    with sigterm_requests() as term:
        if start_epoch == 0:  # a run stopped in epoch 0 logs it again: its records were dropped
            logger.log(0, lr_peak=peak_lr, global_batch=global_batch, blr=cfg.blr)
        for epoch in range(start_epoch, cfg.epochs):
            ddp.train()
            epoch_start = (g.get_state(), rng_state())
            skip = start_step if epoch == start_epoch else 0
            running, n = torch.zeros((), device=device), 0  # summed on the device: one sync per epoch
            if skip and partial:
                running += partial["loss_sum"]
                n = int(partial["n"])
            done, stop = skip, False
            for step, batch in scheduled_batches(
                train_loader,
                epoch,
                steps_per_epoch,
                opt,
                lr_schedule,
                "finetune",
                info.is_main,
                skip,
                term,
                rng_at_stop if skip else None,
            ):
                x = batch["image"].to(device, non_blocking=True)
                y = batch["label"].to(device, non_blocking=True)
                if mixup is not None:
                    x, y = mixup(x, y)
                with precision.autocast():
                    loss = criterion(ddp(x), y)
                grad_norm = scaler(loss, opt, model.parameters, clip_grad=cfg.clip_grad)
                opt.zero_grad(set_to_none=True)
                watch.record(step, loss.detach(), None if scaler.enabled else grad_norm)
                if ema is not None:
                    ema.update(model, step=step)
                running += loss.detach().float()
                n += 1
                done += 1
                if term.agreed(device):
                    stop = True
                    if (
                        done < steps_per_epoch
                    ):  # after an epoch's last step its loader ends as in a run never stopped
                        break
            watch.check(lambda bad: _diverged(bad, steps_per_epoch, out / "checkpoint.pth"))
            stop = stop or term.agreed(device)  # also where the loader ended with its workers (group SIGTERM)
            if stop and done < steps_per_epoch:
                save(epoch - 1, done, epoch_start, running, n)
                logger.close()
                where = f"epoch {epoch} step {done}/{steps_per_epoch}"
                stopped("finetune", where, out / "checkpoint.pth", info.is_main)
            metrics = evaluate(model, val, cfg, device, info)
            record = {
                "train_loss": running.item() / max(n, 1),
                "val_top1": metrics["top1"],
                "val_top5": metrics["top5"],
                "lr": opt.param_groups[-1]["lr"],
            }
            if ema is not None:
                ema_m = evaluate(ema.module, val, cfg, device, info)
                record.update(ema_top1=ema_m["top1"], ema_top5=ema_m["top5"])
            logger.log(epoch + 1, **record)
            history.append({"epoch": epoch, **record})
            if metrics["top1"] > best["top1"]:
                best = {"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch}
                if info.is_main:
                    atomic_torch_save(
                        {
                            "model": model.state_dict(),
                            "epoch": epoch,
                            "metrics": metrics,
                            "encoder_spec": loaded.record.arch(),
                            "classes": train.classes,
                        },
                        out / "best.pth",
                    )
            save(epoch)
            if stop and epoch + 1 < cfg.epochs:
                logger.close()
                stopped("finetune", f"the end of epoch {epoch}", out / "checkpoint.pth", info.is_main)
    logger.close()
    last = history[-1] if history else {}
    results = {
        "top1": best["top1"],
        "top5": best["top5"],
        "best_epoch": best["epoch"],
        "last_top1": last.get("val_top1"),
        "last_top5": last.get("val_top5"),
        "num_classes": num_classes,
        "peak_lr": peak_lr,
    }
    if ema is not None:
        results.update(ema_top1=last.get("ema_top1"), ema_top5=last.get("ema_top5"))
    if info.is_main:
        results = write_results(cfg.out, cfg, loaded, results)
    return results


def _diverged(step: int, steps_per_epoch: int, ckpt: Path) -> str:
    return (
        f"non-finite loss at step {step} (epoch {step // steps_per_epoch}); {kept_checkpoint(ckpt)} (lower --blr or "
        "set --clip-grad)"
    )


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
