"""Linear probing of a frozen encoder (paper Table 3; MAE protocol, He et al. 2022 Sec. A.2).

Two modes:

* ``full``: every epoch runs the frozen encoder on freshly augmented images (RandomResizedCrop + flip), then a
  BatchNorm(affine=False) + linear head per swept learning rate, LARS (or SGD) with a cosine schedule; 90 epochs
  by default. This is the published protocol.
* ``fast``: features are extracted once (center crop, plus ``fast_views`` augmented views per training image) and
  cached in the run directory; the heads train on the cached tensors in seconds. Cheaper, slightly optimistic or
  pessimistic depending on the data (see ``benchmarks/results/linprobe-modes.md``).

Both report the best head of the sweep (top-1/top-5 on val) and every head's numbers.

Full mode runs on the trainer (:class:`~semmae.engine.epoch_trainer.EpochTrainer`): it checkpoints each epoch and, when
SIGTERM stops it, at that step; ``--resume auto`` continues from the step. The fast mode's heads train in a pure
function (:func:`fast_linear_probe`) whose optimiser step is the trainer's (:func:`~semmae.engine.trainer.gradient_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from semmae.engine.checkpoint import load_states
from semmae.engine.epoch_trainer import EpochTrainer
from semmae.engine.precision import resolve_precision
from semmae.engine.run_options import continues
from semmae.engine.schedule import cosine_schedule, set_lr
from semmae.engine.stage_run import run_claimed
from semmae.engine.trainer import gradient_step, run_trainer
from semmae.errors import UserError
from semmae.eval.common import (
    CENTER,
    ShardSampler,
    all_reduce_sum,
    batch_features,
    build_encoder_from_config,
    build_view_datasets,
    extract_features,
    feature_options,
    file_sha256,
    loader,
    resolve_tokens,
    set_view,
    shuffled_loader,
    write_results,
)
from semmae.eval.config import LinprobeConfig
from semmae.eval.heads import ProbeHeads, build_head_optimizer, head_metrics
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_loading import LoadedEncoder
from semmae.models.encoder_record import EncoderRecord
from semmae.models.kept_tokens import KeptTokens
from semmae.utils.distributed import DistInfo
from semmae.utils.io import atomic_torch_save, load_checkpoint
from semmae.utils.run_logger import RunLogger
from semmae.utils.rundir import RunDir
from semmae.utils.seed import seed_everything

#: the fast probe's cached features in its run folder (read by the lab's probes: benchmarks/semmae_lab/probes.py)
FEATURES_FILE = "features.pt"


def _sweep_results(c1: torch.Tensor, c5: torch.Tensor, n: int, blrs: list[float]) -> dict[str, Any]:
    top1 = (c1.double() * 100.0 / max(n, 1)).tolist()
    top5 = (c5.double() * 100.0 / max(n, 1)).tolist()
    best = max(range(len(blrs)), key=lambda h: (top1[h], top5[h]))
    return {
        "top1": top1[best],
        "top5": top5[best],
        "best_blr": blrs[best],
        "best_on_edge": sweep_edge(blrs, blrs[best]),
        "per_blr": [{"blr": b, "top1": t1, "top5": t5} for b, t1, t5 in zip(blrs, top1, top5)],
    }


def sweep_edge(values: list[float], best: float) -> str | None:
    """``"top"`` / ``"bottom"`` when ``best`` is the largest / smallest of a sweep of 2+ values (the optimum may
    lie outside it), else None."""
    if len(set(values)) < 2:
        return None
    return "top" if best == max(values) else "bottom" if best == min(values) else None


def edge_note(verb: str, results: dict[str, Any]) -> str | None:
    """One line for a sweep whose best learning rate is its largest or smallest one, else None."""
    edge = results.get("best_on_edge")
    if not edge:
        return None
    blrs = [r["blr"] for r in results.get("per_blr", [])]
    span = f" [{min(blrs):g} .. {max(blrs):g}]" if blrs else ""
    way = "above" if edge == "top" else "below"
    return (
        f"{verb}: note: the best blr {results['best_blr']:g} is the {edge} of the sweep{span}; the optimum may lie "
        f"{way} it: widen --blrs"
    )


def fast_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int | None = None,
    epochs: int = 90,
    blrs: list[float] | tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.4),
    batch_size: int = 256,
    optimizer: str = "lars",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    warmup_epochs: int = 10,
    seed: int = 0,
    log: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train BN + linear heads (one per blr) on cached features [N, D] and report val top-1/top-5 (percent).

    Callable from the pretraining engine and the demo. Features stay on their device; ``warmup_epochs`` is clipped
    to the epoch count. Returns ``{"top1", "top5", "best_blr", "per_blr": [...]}``.
    """
    device = train_features.device
    if num_classes is None:
        num_classes = int(max(int(train_labels.max()), int(val_labels.max()))) + 1
    blrs = list(blrs)
    g = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    heads = ProbeHeads(train_features.shape[1], num_classes, len(blrs)).to(device)
    bs = min(batch_size, train_features.shape[0])
    opt = build_head_optimizer(heads, [b * bs / 256 for b in blrs], optimizer, weight_decay, momentum)
    steps_per_epoch = max(1, train_features.shape[0] // bs)  # drop_last: BatchNorm never sees a batch of 1
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs, epochs) * steps_per_epoch
    factors = probe_schedule(total, warmup)
    y = train_labels.to(device).long()
    step = 0
    heads.train()
    for epoch in range(epochs):
        perm = torch.randperm(train_features.shape[0], generator=g).to(device)
        running = torch.zeros((), device=device)  # summed on the device: one sync per epoch
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            set_lr(opt, float(factors[step]))
            loss = heads.loss(heads(train_features[idx]), y[idx])
            gradient_step(loss, opt, heads.parameters)
            opt.zero_grad(set_to_none=True)
            running += loss.detach() / len(blrs)
            step += 1
        if log is not None:
            log(epoch, {"train_loss": running.item() / steps_per_epoch})
    c1, c5 = head_metrics(heads, val_features.to(device), val_labels.to(device).long())
    return _sweep_results(c1, c5, val_features.shape[0], blrs)


def probe_schedule(total_steps: int, warmup_steps: int) -> np.ndarray:
    """Per-step factors of every head's peak lr: linear warm-up reaching 1 on the last warm-up step, then a half
    cosine to 0 (MAE's linear-probe recipe)."""
    return cosine_schedule(1.0, 0.0, total_steps, warmup_steps, warmup_offset=1)


# --------------------------------------------------------------------------------------------------- the command
def _cached_features(
    cfg: LinprobeConfig,
    encoder,
    enc_record: EncoderRecord,
    device,
    info: DistInfo,
    ckpt_digest: str | None,
    keep: KeptTokens | None,
):
    """Fast mode: a call returning (train features with views [N*(1+V), D], labels, val features, val labels,
    class count), cached in OUT/features.pt and reused when the checkpoint digest and feature settings match.
    What can refuse (the cache, the datasets) happens here, before the run folder is written."""
    size, patch = enc_record.img_size, enc_record.patch_size
    cache = Path(cfg.out) / FEATURES_FILE
    key = {
        "checkpoint_sha256": ckpt_digest,
        "random_init": cfg.random_init,
        "pool": cfg.pool,
        "img_size": size,
        "fast_views": cfg.fast_views,
        "seed": cfg.seed,
        "crop_scale_min": cfg.crop_scale_min,
        "crop_pct": cfg.crop_pct,
        **(keep.describe() if keep else {"tokens": "all"}),
        **(
            {"train_parts": cfg.train_parts, "val_parts": cfg.val_parts}
            if keep and keep.source == "cache"
            else {}
        ),
    }
    if continues(cfg) and cache.is_file() and not cfg.random_init:
        obj = load_checkpoint(cache)
        if obj.get("key") == key:
            return lambda: (
                obj["train_x"].to(device),
                obj["train_y"].to(device),
                obj["val_x"].to(device),
                obj["val_y"].to(device),
                len(obj["classes"]),
            )
    train, val = build_view_datasets(cfg, size, patch, CENTER, CENTER)
    return partial(_extract_fast_features, cfg, encoder, device, info, keep, key, train, val, size, patch)


def _extract_fast_features(
    cfg: LinprobeConfig, encoder, device, info: DistInfo, keep, key, train, val, size, patch
):
    cache = Path(cfg.out) / FEATURES_FILE
    kw = feature_options(cfg, device, info, keep)
    xs, ys = [], []
    x, y = extract_features(encoder, train, desc="train features", **kw)
    xs.append(x)
    ys.append(y)
    set_view(train, ("augment", (cfg.crop_scale_min, 1.0)), size, patch, cfg.crop_pct)
    for v in range(cfg.fast_views):
        x, y = extract_features(encoder, train, desc=f"train view {v + 1}", **kw)
        xs.append(x)
        ys.append(y)
    vx, vy = extract_features(encoder, val, desc="val features", **kw)
    tx, ty = torch.cat(xs), torch.cat(ys)
    if info.is_main:
        atomic_torch_save(
            {
                "key": key,
                "train_x": tx.cpu(),
                "train_y": ty.cpu(),
                "val_x": vx.cpu(),
                "val_y": vy.cpu(),
                "classes": train.classes,
            },
            cache,
        )
    return tx, ty, vx, vy, len(train.classes)


def run_linprobe(cfg: LinprobeConfig) -> dict:
    if cfg.mode == "full":
        return run_trainer(FullProbe, cfg)
    return run_claimed(cfg, "linprobe", _run_fast_probe)


def probe_encoder(cfg: LinprobeConfig, device) -> tuple[torch.nn.Module, LoadedEncoder, KeptTokens | None]:
    """The frozen encoder (eval mode, no gradients), what was loaded and the run's token choice."""
    loaded = build_encoder_from_config(cfg)
    encoder = loaded.model.to(device).eval().requires_grad_(False)
    return encoder, loaded, resolve_tokens(cfg, loaded.record)


def _run_fast_probe(cfg: LinprobeConfig, info: DistInfo, device, run_dir: RunDir) -> dict:
    seed_everything(cfg.seed, info.rank)
    encoder, loaded, keep = probe_encoder(cfg, device)
    digest = file_sha256(cfg.checkpoint) if cfg.checkpoint else None
    features = _cached_features(cfg, encoder, loaded.record, device, info, digest, keep)
    # the whole sweep runs again (only the features are reused), so it is logged afresh
    logger = run_dir.start(cfg, keep_log_until=-1)
    tx, ty, vx, vy, num_classes = features()
    metrics = fast_linear_probe(
        tx,
        ty,
        vx,
        vy,
        num_classes,
        cfg.epochs,
        cfg.blrs,
        cfg.batch_size * info.world_size,
        cfg.optimizer,
        cfg.weight_decay,
        cfg.momentum,
        cfg.warmup_epochs,
        cfg.seed,
        log=lambda ep, rec: logger.log(ep, **rec),
    )
    metrics.update(mode="fast", num_train_rows=int(tx.shape[0]), num_classes=num_classes)
    return _finish(cfg, info, loaded, keep, metrics, logger)


def _finish(
    cfg: LinprobeConfig, info: DistInfo, loaded: LoadedEncoder, keep, metrics: dict, logger: RunLogger
) -> dict:
    """The last log record and ``results.json`` of either mode."""
    metrics.update(keep.describe() if keep else {"tokens": "all"})
    logger.log(cfg.epochs, val_top1=metrics["top1"], val_top5=metrics["top5"])
    logger.close()
    if info.is_main:
        metrics = write_results(cfg.out, cfg, loaded, metrics)
    return metrics


class FullProbe(EpochTrainer):
    """``--mode full`` on the trainer: the frozen encoder runs on freshly augmented images every step; the heads
    (one per swept learning rate) train, and are evaluated every ``--eval-every`` epochs."""

    verb = kind = "linprobe"
    sum_keys = ("head_mean",)

    def build(self) -> None:
        cfg, info, device = self.cfg, self.dist, self.device
        self.encoder, self.loaded, self.keep = probe_encoder(cfg, device)
        size, patch = self.loaded.record.img_size, self.loaded.record.patch_size
        train, self.val = build_view_datasets(
            cfg, size, patch, ("augment", (cfg.crop_scale_min, 1.0)), CENTER
        )
        self.num_classes = len(train.classes)
        if len(train) < 2:
            raise UserError("the linear probe needs at least 2 training images")
        self.heads = self.model_core = ProbeHeads(self.encoder.embed_dim, self.num_classes, len(cfg.blrs)).to(
            device
        )
        global_batch = cfg.batch_size * info.world_size
        self.optimizer = build_head_optimizer(
            self.heads,
            [b * global_batch / 256 for b in cfg.blrs],
            cfg.optimizer,
            cfg.weight_decay,
            cfg.momentum,
        )
        self.loader = shuffled_loader(train, min(cfg.batch_size, len(train)), cfg, info)
        self.model = DistributedDataParallel(self.heads) if info.enabled else self.heads
        self.steps_per_epoch = len(self.loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.lr_schedule = probe_schedule(self.total_steps, cfg.warmup_epochs * self.steps_per_epoch)
        self.tokens = self.keep.describe() if self.keep else {"tokens": "all"}
        self.metrics: dict | None = None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        with torch.no_grad(), self.precision.autocast():
            feats = batch_features(self.encoder, batch, self.device, self.cfg.pool, self.keep)
        loss = self.heads.loss(self.model(feats.float()), batch["label"].to(self.device))
        return {"loss": loss, "head_mean": loss.detach() / len(self.cfg.blrs)}

    def explain(self, step: int) -> str:
        return f"non-finite loss at step {step} (epoch {step // self.steps_per_epoch}); {self.kept()} (lower --blrs)"

    def encoder_record(self) -> EncoderRecord:
        return self.loaded.record

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"blrs": list(self.cfg.blrs), "mode": "full", "tokens": self.tokens, "metrics": self.metrics}

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        extra = ckpt.extra
        if (
            extra.get("blrs") != list(self.cfg.blrs)
            or extra.get("mode") != "full"
            or extra.get("tokens") != self.tokens
        ):
            raise UserError(
                f"{path} was written by a different probe (blrs/mode/tokens); use another --out or --overwrite"
            )
        load_states(path, ckpt, model=self.heads)
        self.metrics = extra.get("metrics")

    def keep_log_until(self) -> int:
        return self.epoch - 1  # epochs are the log's steps: those after the checkpoint's are logged again

    def epoch_end(self, epoch: int) -> None:
        sums, steps = self.epoch_sums, self.epoch_steps
        cfg, spe = self.cfg, self.steps_per_epoch
        record: dict[str, Any] = {
            "train_loss": sums["head_mean"].item() / max(steps, 1),
            "lr_best_head_factor": float(self.lr_schedule[(epoch + 1) * spe - 1]),
        }
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            self.metrics = _evaluate_heads(
                self.heads, self.encoder, self.val, cfg, self.device, self.dist, self.keep
            )
            record.update(
                val_top1=self.metrics["top1"],
                val_top5=self.metrics["top5"],
                best_blr=self.metrics["best_blr"],
            )
        self.logger.log(epoch, **record)

    def end_run(self) -> dict:
        assert self.metrics is not None
        metrics = {**self.metrics, "mode": "full", "num_classes": self.num_classes}
        return _finish(self.cfg, self.dist, self.loaded, self.keep, metrics, self.logger)


@torch.no_grad()
def _evaluate_heads(
    heads: ProbeHeads, encoder, val, cfg: LinprobeConfig, device, info: DistInfo, keep: KeptTokens | None
) -> dict:
    heads.eval()
    sampler = ShardSampler(len(val), info.rank, info.world_size)
    h = len(cfg.blrs)
    c1 = torch.zeros(h, dtype=torch.long, device=device)
    c5 = torch.zeros(h, dtype=torch.long, device=device)
    for batch in loader(val, cfg.batch_size, cfg.num_workers, sampler=sampler):
        with resolve_precision(cfg.precision, device).autocast():
            feats = batch_features(encoder, batch, device, cfg.pool, keep)
        a, b = head_metrics(heads, feats.float(), batch["label"].to(device))
        c1 += a
        c5 += b
    sums = all_reduce_sum(c1.tolist() + c5.tolist(), device)
    heads.train()
    return _sweep_results(torch.tensor(sums[:h]), torch.tensor(sums[h:]), len(val), list(cfg.blrs))
