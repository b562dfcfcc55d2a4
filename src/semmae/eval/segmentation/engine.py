"""Training and evaluation loops of ``semmae segment`` (paper Table 7 protocol, iteration-based like mmseg).

Train (:class:`SegmentTrainer`, on :class:`~semmae.engine.epoch_trainer.EpochTrainer`): per-rank batch = global batch /
world size, an endless shuffled loader (DistributedSampler under torchrun), per-iteration lr from
:func:`poly_schedule` times each group's layer-decay ``lr_scale``, the run's precision, ``checkpoint.pth`` every
``ckpt_every`` iterations and where SIGTERM stops the run (resumable to the iteration, in the middle of the epoch's
order), evaluation every ``eval_every`` iterations and at the end, ``seg_final.pth`` + ``results.json`` +
``predictions.png`` at the end.
Eval: each rank evaluates a disjoint slice of the validation images one at a time with sliding windows; the
confusion matrices are summed over ranks, so every image counts exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from semmae.config import build_config
from semmae.data.loader import DataLoader
from semmae.engine.checkpoint import mismatch
from semmae.engine.epoch_trainer import EpochTrainer
from semmae.engine.optim import layer_decay_optimizer
from semmae.engine.precision import Precision, resolve_precision
from semmae.engine.schedule import poly_schedule
from semmae.engine.stage_run import run_claimed
from semmae.engine.trainer import run_trainer
from semmae.errors import UserError
from semmae.eval.segmentation.backbone import ViTPyramid
from semmae.eval.segmentation.config import INHERITED_FIELDS, SegmentEvalConfig, SegmentTrainConfig
from semmae.eval.segmentation.dataset import SegmentationDataset, SegmentationSource, resolve_source
from semmae.eval.segmentation.inference import predict
from semmae.eval.segmentation.metrics import ConfusionMatrix, format_table
from semmae.eval.segmentation.segmentor import Segmentor, segmentation_loss
from semmae.eval.segmentation.transforms import EvalTransform, TrainTransform, denormalize
from semmae.eval.segmentation.visualize import colorize, save_comparison
from semmae.models.checkpoint_schema import TrainState, read_train_state
from semmae.models.encoder_loading import LoadedEncoder, encoder_from_record, load_encoder
from semmae.models.encoder_record import EncoderRecord
from semmae.utils.distributed import DistInfo, barrier
from semmae.utils.io import atomic_torch_save, atomic_write_json, checkpoint_file, load_checkpoint
from semmae.utils.plain_config import config_to_dict
from semmae.utils.rundir import RunDir
from semmae.utils.seed import seed_everything

CKPT_NAME = "checkpoint.pth"
FINAL_NAME = "seg_final.pth"


def source_of(cfg: Any) -> SegmentationSource:
    return resolve_source(cfg.data, cfg.layout, cfg.num_classes, cfg.reduce_zero_label, cfg.ignore_index)


def build_segmentor(
    cfg: SegmentTrainConfig, num_classes: int, record: EncoderRecord | None = None
) -> tuple[Segmentor, LoadedEncoder]:
    """The encoder (pretrained, random, or - with the ``record`` of a segmentor checkpoint's encoder - an empty
    shell to load that checkpoint into) wrapped as a pyramid with the UPerNet and auxiliary heads."""
    if record is not None:
        encoder = encoder_from_record(record, drop_path_rate=cfg.drop_path)
    else:
        overrides = {
            k: getattr(cfg, k) for k in ("embed_dim", "depth", "patch_size") if getattr(cfg, k) is not None
        }
        encoder = load_encoder(
            cfg.checkpoint,
            arch=cfg.arch,
            img_size=cfg.crop_size,
            random_init=cfg.random_init,
            num_heads=cfg.num_heads,
            drop_path_rate=cfg.drop_path,
            init=cfg.init,
            **overrides,
        )
    model = Segmentor(
        ViTPyramid(encoder.model, cfg.out_indices, frozen=cfg.freeze_encoder),
        num_classes,
        cfg.head_channels,
        cfg.pool_scales,
        cfg.aux_channels,
        aux=cfg.aux_weight > 0,
        dropout=cfg.head_dropout,
    )
    return model, encoder


def _loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    dist_info: DistInfo,
    seed: int,
    drop_last: bool,
) -> torch.utils.data.DataLoader:
    sampler = None
    if dist_info.enabled and shuffle:
        sampler = torch.utils.data.DistributedSampler(
            dataset, dist_info.world_size, dist_info.rank, shuffle=True, seed=seed, drop_last=True
        )
    generator = torch.Generator().manual_seed(seed + dist_info.rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=num_workers > 0,
        collate_fn=None if batch_size > 1 or shuffle else _single,
    )


def _single(items: list[dict]) -> dict:
    """Evaluation batches hold one image (images differ in size)."""
    (item,) = items
    return {
        "image": item["image"][None],
        "label": item["label"][None],
        "index": torch.tensor([item["index"]]),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    source: SegmentationSource,
    crop: int,
    stride: int,
    device: torch.device,
    precision: Precision,
    dist_info: DistInfo,
    num_vis: int = 0,
    num_workers: int = 0,
) -> tuple[dict, list]:
    """Sliding-window evaluation over ``dataset``; returns (metrics of :func:`summarize`, visual rows)."""
    was_training = model.training
    model.eval()
    indices = list(range(dist_info.rank, len(dataset), dist_info.world_size))
    subset = torch.utils.data.Subset(dataset, indices)
    loader = _loader(subset, 1, False, num_workers, dist_info, 0, drop_last=False)
    cm = ConfusionMatrix(source.num_classes, source.ignore_index, device=device)
    rows = []
    for batch in tqdm(loader, desc="eval", disable=not dist_info.is_main, leave=False):
        image, label = batch["image"].to(device), batch["label"].to(device)
        pred = predict(model, image, label.shape[-2:], source.num_classes, crop, stride, precision)
        cm.update(pred, label)
        if dist_info.is_main and len(rows) < num_vis:
            img = F.interpolate(image.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)[0]
            rows.append(
                (
                    denormalize(img).permute(1, 2, 0).numpy(),
                    colorize(label[0], source.num_classes, source.ignore_index),
                    colorize(pred[0], source.num_classes, source.ignore_index),
                )
            )
    cm.all_reduce()
    model.train(was_training)
    metrics = cm.compute(source.class_names)
    metrics["num_images"] = len(dataset)
    return metrics, rows


def write_results(out: Path, metrics: dict, rows: list, extra: dict) -> dict:
    """``results.json`` (scores in percent) and ``predictions.png`` in ``out``."""

    def pct(v: float | None) -> float | None:
        return None if v is None else round(100 * v, 4)

    results = {
        "miou": pct(metrics["miou"]),
        "macc": pct(metrics["macc"]),
        "aacc": pct(metrics["aacc"]),
        "units": "percent",
        **extra,
        "num_images": metrics["num_images"],
        "pixels": metrics["pixels"],
        "per_class": [
            {"name": c["name"], "iou": pct(c["iou"]), "acc": pct(c["acc"]), "pixels": c["pixels"]}
            for c in metrics["per_class"]
        ],
    }
    atomic_write_json(out / "results.json", results)
    save_comparison(rows, out / "predictions.png")
    return results


def report(out: Path, metrics: dict, rows: list, extra: dict, is_main: bool) -> dict:
    """On the main process: :func:`write_results` and the metrics table on stdout; the results (``{}`` elsewhere)."""
    if not is_main:
        return {}
    results = write_results(out, metrics, rows, extra)
    print(format_table(metrics))
    return results


def _unwrap(model: torch.nn.Module) -> Segmentor:
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def train(cfg: SegmentTrainConfig) -> dict:
    """Run ``semmae segment train``; returns the final results (percent)."""
    return run_trainer(SegmentTrainer, cfg)


class SegmentTrainer(EpochTrainer):
    """``semmae segment train`` on the trainer: iterations over an endless shuffled loader (epochs only order the
    data), the segmentor's step, log / evaluation / checkpoint every N iterations, the final files at the end."""

    verb, kind = "segment train", "segment"
    ckpt_name = CKPT_NAME
    checkpoint_each_epoch = False  # every --ckpt-every iterations instead, and where the run stops
    sum_keys = ()

    def build(self) -> None:
        cfg, dist_info, device = self.cfg, self.dist, self.device
        if cfg.batch_size % dist_info.world_size:
            raise UserError(
                f"--batch-size {cfg.batch_size} is not divisible by the {dist_info.world_size} ranks"
            )
        per_rank = cfg.batch_size // dist_info.world_size
        self.source = source = source_of(cfg)
        train_set = SegmentationDataset(
            source,
            "train",
            TrainTransform(
                cfg.crop_size,
                cfg.scale_base,
                cfg.max_long,
                tuple(cfg.scale_range),
                cfg.hflip,
                cfg.photometric,
                source.ignore_index,
            ),
            cfg.train_split,
        )
        self.val_set = SegmentationDataset(
            source, "val", EvalTransform(cfg.eval_short_side, cfg.max_long), cfg.val_split
        )
        if len(train_set) < per_rank * dist_info.world_size:
            raise UserError(f"{len(train_set)} training images are fewer than one batch ({cfg.batch_size})")
        model, self.loaded = build_segmentor(cfg, source.num_classes)
        model.to(device)
        self.optimizer = layer_decay_optimizer(
            model, cfg.lr, cfg.weight_decay, cfg.layer_decay, tuple(cfg.betas)
        )
        self.lr_schedule = poly_schedule(cfg.lr, cfg.iters, cfg.warmup_iters, cfg.poly_power, cfg.min_lr)
        if dist_info.enabled:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.model, self.model_core = model, _unwrap(model)
        self.loader = _loader(train_set, per_rank, True, cfg.num_workers, dist_info, cfg.seed, drop_last=True)
        self.steps_per_epoch, self.total_steps = len(self.loader), cfg.iters
        self.encoder_source = {
            "layout": self.loaded.layout,
            "checkpoint": self.loaded.checkpoint,
            "random_init": self.loaded.random_init,
        }
        if dist_info.is_main:
            core = self.model_core
            print(
                f"segment train: {len(train_set)} train / {len(self.val_set)} val images, {source.num_classes} "
                f"classes ({source.layout} layout), encoder {self.loaded.layout or 'random init'}"
                f"{' (frozen)' if cfg.freeze_encoder else ''}, "
                f"{sum(p.numel() for p in core.parameters()) / 1e6:.1f}M params "
                f"({sum(p.numel() for p in core.parameters() if p.requires_grad) / 1e6:.1f}M trained), "
                f"lr {cfg.lr:g} at global batch {cfg.batch_size} ({per_rank} x {dist_info.world_size} ranks)"
            )

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        with self.precision.autocast():
            out_maps = self.model(images)
        return segmentation_loss(out_maps, labels, self.source.ignore_index, self.cfg.aux_weight)

    def explain(self, step: int) -> str:
        return (
            f"loss became non-finite at iteration {step}; {self.kept()} (lower --lr or use --precision fp32)"
        )

    def stop_place(self) -> str:
        return f"iteration {self.step}"

    def encoder_record(self) -> EncoderRecord:
        return self.loaded.record

    def checkpoint_extras(self) -> dict:
        return {
            "num_classes": self.source.num_classes,
            "class_names": self.source.class_names,
            "encoder_source": self.encoder_source,
        }

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        cfg, it = self.cfg, self.step
        if it % cfg.log_every == 0 or it == cfg.iters:
            vals = {k: float(v.detach()) for k, v in losses.items()}
            self.logger.log(it, lr=float(self.lr_schedule[it - 1]), epoch=self.epoch, **vals)
        if cfg.eval_every and it % cfg.eval_every == 0 and it < cfg.iters:
            self.validate(num_vis=0)
        if cfg.ckpt_every and it % cfg.ckpt_every == 0 and it < cfg.iters:
            self.checkpoint()

    def validate(self, num_vis: int) -> tuple[dict, list]:
        """Sliding-window metrics on the validation split, logged at the current iteration."""
        cfg = self.cfg
        metrics, rows = evaluate(
            self.model_core,
            self.val_set,
            self.source,
            cfg.crop_size,
            cfg.eval_stride,
            self.device,
            self.precision,
            self.dist,
            num_vis,
            cfg.num_workers,
        )
        self.logger.log(
            self.step, val_miou=metrics["miou"], val_macc=metrics["macc"], val_aacc=metrics["aacc"]
        )
        return metrics, rows

    def end_run(self) -> dict:
        metrics, rows = self.validate(self.cfg.num_vis)
        out, it = Path(self.cfg.out), self.step
        encoder = {"spec": self.loaded.record.arch(), **self.encoder_source}
        if self.is_main:  # the final segmentor (what `segment eval` reads), beside the last training state
            final = TrainState(
                kind=self.kind,
                config=config_to_dict(self.cfg),
                encoder=self.encoder_record(),
                model=self.model_core.state_dict(),
                step=it,
                extra=self.checkpoint_extras(),
            )
            atomic_torch_save(final.to_dict(), out / FINAL_NAME)
        self.checkpoint()
        extra = {"iteration": it, "split": "val", "data": str(self.source.root), "encoder": encoder}
        results = report(out, metrics, rows, extra, self.is_main)
        barrier()
        return results


def evaluate_checkpoint(cfg: SegmentEvalConfig) -> dict:
    """Run ``semmae segment eval``: rebuild the segmentor from its checkpoint and score the validation split.

    ``--out`` is claimed as a run folder of its own (:func:`semmae.utils.rundir.claim_run_dir`, as ``knn`` does:
    an evaluation has nothing to continue, so a rerun with the same settings into its own folder replaces its
    results, and ``--overwrite`` deletes an earlier evaluation with other settings first), never a user's folder or
    another verb's run, such as the training run it evaluates."""
    return run_claimed(cfg, "segment eval", _evaluate_claimed, resume=not cfg.overwrite)


def _evaluate_claimed(
    cfg: SegmentEvalConfig, dist_info: DistInfo, device: torch.device, run_dir: RunDir
) -> dict:
    """The claimed evaluation (:func:`evaluate_checkpoint`): every check first, then the first write."""
    seed_everything(cfg.seed, dist_info.rank)
    path = checkpoint_file(cfg.checkpoint)
    raw = load_checkpoint(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a `semmae segment train` checkpoint (no config/encoder entries)")
    ckpt = read_train_state(raw, source=str(path))
    if ckpt.config is None or ckpt.encoder is None and "encoder_source" not in ckpt.extra:
        raise UserError(f"{path} is not a `semmae segment train` checkpoint (no config/encoder entries)")
    values = dict(ckpt.config)
    values.update({k: getattr(cfg, k) for k in INHERITED_FIELDS if getattr(cfg, k) is not None})
    train_cfg = build_config(SegmentTrainConfig, values, source=f"checkpoint {path} config")
    source = source_of(train_cfg)
    if source.num_classes != ckpt.extra["num_classes"]:
        raise UserError(
            f"{cfg.data or train_cfg.data} has {source.num_classes} classes but the checkpoint "
            f"predicts {ckpt.extra['num_classes']}"
        )
    record = ckpt.encoder
    if record is None:
        raise UserError(f"{path} does not describe its encoder (no encoder spec)")
    model, _ = build_segmentor(train_cfg, source.num_classes, record)
    # where the encoder came from (the rest of the old ``encoder`` entry: :func:`upgrade`)
    encoder = {"spec": record.arch(), **(ckpt.extra.get("encoder_source") or {})}
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit the model it describes: {mismatch(e)}") from None
    model.to(device)
    val_set = SegmentationDataset(
        source, "val", EvalTransform(train_cfg.eval_short_side, train_cfg.max_long), train_cfg.val_split
    )
    out = Path(cfg.out)
    logger = run_dir.start(cfg, keep_log_until=-1)  # the first write into --out, after every check
    metrics, rows = evaluate(
        model,
        val_set,
        source,
        train_cfg.crop_size,
        train_cfg.eval_stride,
        device,
        resolve_precision(train_cfg.precision, device),
        dist_info,
        cfg.num_vis,
        cfg.num_workers,
    )
    it = int(ckpt.step if ckpt.step is not None else ckpt.extra.get("iteration", 0))
    logger.log(it, val_miou=metrics["miou"], val_macc=metrics["macc"], val_aacc=metrics["aacc"])
    logger.close()
    extra = {"iteration": it, "split": "val", "data": str(source.root), "checkpoint": str(path)}
    return report(out, metrics, rows, {**extra, "encoder": encoder}, dist_info.is_main)
