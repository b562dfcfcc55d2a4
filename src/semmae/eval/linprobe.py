"""Linear probing of a frozen encoder (paper Table 3; MAE protocol, He et al. 2022 Sec. A.2).

Two modes:

* ``full``: every epoch runs the frozen encoder on freshly augmented images (RandomResizedCrop + flip), then a
  BatchNorm(affine=False) + linear head per swept learning rate, LARS (or SGD) with a cosine schedule; 90 epochs
  by default. This is the published protocol.
* ``fast``: features are extracted once (center crop, plus ``fast_views`` augmented views per training image) and
  cached in the run directory; the heads train on the cached tensors in seconds. Cheaper, slightly optimistic or
  pessimistic depending on the data (see ``benchmarks/results/linprobe-modes.md``).

Both report the best head of the sweep (top-1/top-5 on val) and every head's numbers.

Full mode checkpoints each epoch and, when SIGTERM stops it, at that step; ``--resume auto`` continues from the step
(:mod:`semmae.engine.termination`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from semmae.engine.epoch_loop import scheduled_batches
from semmae.engine.precision import resolve_precision
from semmae.engine.run_options import (
    continues,
    resume_file,
)
from semmae.engine.schedule import cosine_schedule, set_lr
from semmae.engine.stage_run import run_claimed
from semmae.engine.termination import sigterm_requests, stopped
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
    write_results,
)
from semmae.eval.config import LinprobeConfig  # noqa: F401 - its home is the torch-free eval.config
from semmae.eval.heads import ProbeHeads, build_head_optimizer, head_metrics
from semmae.eval.kept_tokens import KeptTokens
from semmae.models.encoder_record import EncoderRecord
from semmae.utils.distributed import DistInfo
from semmae.utils.io import atomic_torch_save, load_checkpoint
from semmae.utils.rundir import RunDir, RunLogger
from semmae.utils.seed import rng_state, seed_everything, set_rng_state

#: the fast probe's cached features in its run folder (read by the pipeline's probes: semmae.pipeline.probes)
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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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
    return run_claimed(cfg, "linprobe", _run_linprobe)


def _run_linprobe(cfg: LinprobeConfig, info: DistInfo, device, run_dir: RunDir) -> dict:
    seed_everything(cfg.seed, info.rank)
    loaded = build_encoder_from_config(cfg)
    encoder = loaded.model.to(device).eval().requires_grad_(False)
    digest = file_sha256(cfg.checkpoint) if cfg.checkpoint else None
    keep = resolve_tokens(cfg, loaded.record)
    if cfg.mode == "fast":
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
    else:
        metrics, logger = _full_probe(cfg, encoder, loaded.record, device, info, run_dir, keep)
    metrics.update(keep.describe() if keep else {"tokens": "all"})
    logger.log(cfg.epochs, val_top1=metrics["top1"], val_top5=metrics["top5"])
    logger.close()
    if info.is_main:
        metrics = write_results(cfg.out, cfg, loaded, metrics)
    return metrics


def _full_probe(
    cfg: LinprobeConfig,
    encoder,
    enc_record: EncoderRecord,
    device,
    info: DistInfo,
    run_dir: RunDir,
    keep: KeptTokens | None,
) -> tuple[dict, RunLogger]:
    size, patch = enc_record.img_size, enc_record.patch_size
    train, val = build_view_datasets(cfg, size, patch, ("augment", (cfg.crop_scale_min, 1.0)), CENTER)
    num_classes = len(train.classes)
    if len(train) < 2:
        raise UserError("the linear probe needs at least 2 training images")
    heads = ProbeHeads(encoder.embed_dim, num_classes, len(cfg.blrs)).to(device)
    precision = resolve_precision(cfg.precision, device)
    global_batch = cfg.batch_size * info.world_size
    opt = build_head_optimizer(
        heads, [b * global_batch / 256 for b in cfg.blrs], cfg.optimizer, cfg.weight_decay, cfg.momentum
    )
    sampler = (
        DistributedSampler(train, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        if info.enabled
        else None
    )
    g = torch.Generator().manual_seed(cfg.seed)
    train_loader = loader(
        train,
        min(cfg.batch_size, len(train)),
        cfg.num_workers,
        sampler=sampler,
        shuffle=True,
        drop_last=True,
        generator=g,
    )
    model = DistributedDataParallel(heads) if info.enabled else heads
    steps_per_epoch = len(train_loader)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    factors = probe_schedule(total, warmup)
    ckpt_path = Path(cfg.out) / "checkpoint.pth"
    start_epoch, start_step, partial, rng_at_stop, metrics = 0, 0, None, None, None
    continuing = continues(cfg)
    resume_from = resume_file(cfg.resume, ckpt_path, cfg.overwrite)
    tokens = keep.describe() if keep else {"tokens": "all"}
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if (
            state.get("blrs") != list(cfg.blrs)
            or state.get("mode") != "full"
            or state.get("tokens", tokens) != tokens
        ):
            raise UserError(
                f"{resume_from} was written by a different probe (blrs/mode/tokens); use another --out or --overwrite"
            )
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, metrics = int(state["epoch"]) + 1, state.get("metrics")
        # a run stopped by SIGTERM mid-epoch: that epoch's order (and, alone, its RNG) again, from its step
        start_step, partial = int(state.get("step_in_epoch", 0)), state.get("partial")
        if state.get("loader_rng") is not None:
            g.set_state(state["loader_rng"])
        if state.get("rng") is not None and info.world_size == 1:
            set_rng_state(state["rng"])
            rng_at_stop = state.get("rng_at_stop")
    # epochs are the log's steps: those after the checkpoint's are logged again
    logger = run_dir.start(cfg, keep_log_until=start_epoch - 1 if continuing else None)

    def save(done_epoch: int, step_in_epoch: int = 0, epoch_start=None, running=None, n: int = 0) -> None:
        """``checkpoint.pth``: after epoch ``done_epoch``, plus ``step_in_epoch`` steps of the next one (whose
        start's loader generator and RNG state ``epoch_start`` holds) when SIGTERM stopped the run there."""
        loader_rng, rng = epoch_start if epoch_start is not None else (g.get_state(), rng_state())
        if info.is_main:
            atomic_torch_save(
                {
                    "heads": heads.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": done_epoch,
                    "step_in_epoch": step_in_epoch,
                    "partial": {"loss_sum": float(running), "n": n} if step_in_epoch else None,
                    "loader_rng": loader_rng,
                    "rng": rng,
                    "rng_at_stop": rng_state() if step_in_epoch else None,
                    "blrs": list(cfg.blrs),
                    "mode": "full",
                    "tokens": tokens,
                    "metrics": metrics,
                },
                ckpt_path,
            )

    with sigterm_requests() as term:
        for epoch in range(start_epoch, cfg.epochs):
            heads.train()
            epoch_start = (g.get_state(), rng_state())
            skip = start_step if epoch == start_epoch else 0
            running, n = torch.zeros((), device=device), 0  # summed on the device: one sync per epoch
            if skip and partial:
                running += partial["loss_sum"]
                n = int(partial["n"])
            done, stop = skip, False
            for _, batch in scheduled_batches(
                train_loader,
                epoch,
                steps_per_epoch,
                opt,
                factors,
                "linprobe",
                info.is_main,
                skip,
                term,
                rng_at_stop if skip else None,
            ):
                with torch.no_grad(), precision.autocast():
                    feats = batch_features(encoder, batch, device, cfg.pool, keep)
                labels = batch["label"].to(device)
                loss = heads.loss(model(feats.float()), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += loss.detach() / len(cfg.blrs)
                n += 1
                done += 1
                if term.agreed(device):
                    stop = True
                    if (
                        done < steps_per_epoch
                    ):  # after an epoch's last step its loader ends as in a run never stopped
                        break
            stop = stop or term.agreed(device)  # also where the loader ended with its workers (group SIGTERM)
            if stop and done < steps_per_epoch:
                save(epoch - 1, done, epoch_start, running, n)
                logger.close()
                stopped("linprobe", f"epoch {epoch} step {done}/{steps_per_epoch}", ckpt_path, info.is_main)
            record: dict[str, Any] = {
                "train_loss": running.item() / max(n, 1),
                "lr_best_head_factor": float(factors[(epoch + 1) * steps_per_epoch - 1]),
            }
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                metrics = _evaluate_heads(heads, encoder, val, cfg, device, info, keep)
                record.update(
                    val_top1=metrics["top1"], val_top5=metrics["top5"], best_blr=metrics["best_blr"]
                )
            logger.log(epoch, **record)
            save(epoch)
            if stop and epoch + 1 < cfg.epochs:
                logger.close()
                stopped("linprobe", f"the end of epoch {epoch}", ckpt_path, info.is_main)
    assert metrics is not None
    return {**metrics, "mode": "full", "num_classes": num_classes}, logger


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
