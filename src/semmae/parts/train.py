"""``semmae parts train``: learn part tokens + decoder on a frozen encoder (paper Sec. 3.1, Eq. 7).

Only the part head and decoder are trained (AdamW, cosine schedule with warm-up, per-step updates). The frozen
encoder runs under ``no_grad`` in eval mode and stays outside DDP, so DDP wraps a module whose every parameter
gets a gradient (no unused-parameter search). Launch with ``torchrun --nproc_per_node K -m semmae.cli parts train``
for several processes. The loop is the trainer's (:class:`~semmae.engine.epoch_trainer.EpochTrainer`): each epoch writes
``checkpoint.pth`` (atomic, plain data) and a panel ``panels/epoch_XXX.png`` (image | reconstruction | parts); an
interrupted run continues from the last checkpoint. SIGTERM writes ``checkpoint.pth`` at the step where it stops
(mid-epoch too) and exits 130; the resumed run continues from that step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler, Subset

from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.transforms import train_transform
from semmae.data.workers import worker_plan
from semmae.engine.checkpoint import load_states
from semmae.engine.epoch_trainer import EpochTrainer
from semmae.engine.optim import adamw, param_groups
from semmae.engine.schedule import cosine_schedule
from semmae.engine.termination import replayed
from semmae.engine.trainer import run_trainer
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_record import EncoderRecord, vit_record
from semmae.parts.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    FORMAT_VERSION,
    spec_dict,
)
from semmae.parts.config import PartsTrainConfig
from semmae.parts.diagnostics import collapse_verdict, part_usage
from semmae.parts.encoder import FrozenEncoder, FrozenEncoderSpec, build_encoder
from semmae.parts.features import FeatureCache, uint8_image_transform
from semmae.parts.loss import part_loss
from semmae.parts.model import PartHeadSpec, PartModel
from semmae.parts.viz import denormalize, grid_image, overlay, save_png
from semmae.utils.plain_config import config_to_dict
from semmae.utils.seed import set_rng_state

# config fields that define the model; a resumed run must agree on them
_MODEL_FIELDS = (
    "encoder",
    "encoder_checkpoint",
    "img_size",
    "feature_layer",
    "num_parts",
    "token_hidden_dim",
    "proj_dim",
    "softmax_over",
    "scale_logits",
    "similarity",
    "temperature",
    "blur_kernel",
    "blur_sigma",
    "decoder_dim",
    "decoder_min_dim",
    "decoder_convs",
)


def head_spec(cfg: PartsTrainConfig, encoder: FrozenEncoder) -> PartHeadSpec:
    """The part head's shape: widths and grid from the encoder, the rest from the config."""
    return PartHeadSpec(
        embed_dim=encoder.embed_dim,
        grid_size=encoder.grid_size,
        img_size=encoder.img_size,
        num_parts=cfg.num_parts,
        token_hidden_dim=cfg.token_hidden_dim,
        proj_dim=cfg.proj_dim,
        softmax_over=cfg.softmax_over,
        scale_logits=cfg.scale_logits,
        similarity=cfg.similarity,
        temperature=cfg.temperature,
        blur_kernel=cfg.blur_kernel,
        blur_sigma=cfg.blur_sigma,
        decoder_dim=cfg.decoder_dim,
        decoder_min_dim=cfg.decoder_min_dim,
        decoder_convs=cfg.decoder_convs,
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a part checkpoint's AdamW state. Checkpoints written before the training kit (issue 16) list the two
    weight-decay groups the other way round ([decayed, not decayed]); their groups are matched back by order."""
    try:
        optimizer.load_state_dict(state)
    except ValueError:
        if len(state.get("param_groups", [])) != 2:
            raise
        optimizer.load_state_dict({**state, "param_groups": state["param_groups"][::-1]})


def _panel(model: PartModel, diag: FeatureCache, num_images: int, device: torch.device) -> np.ndarray:
    """image | reconstruction | part overlay for the first ``num_images`` diagnostic images, one row each
    (uint8 [H, W, 3])."""
    model.eval()
    with torch.no_grad():
        idx = torch.arange(min(num_images, len(diag)))
        images, f_c, f = diag.batch(idx, torch.zeros_like(idx, dtype=torch.bool), device)
        out = model(f_c, f)
    model.train()
    g = model.spec.grid_size
    ids = out["maps"].argmax(dim=1).reshape(-1, g, g)
    img = denormalize(images)
    return grid_image([img, denormalize(out["recon"]), overlay(img, ids, model.spec.num_parts)])


def train_parts(cfg: PartsTrainConfig) -> Path:
    """Run (or resume) part learning; returns the checkpoint path."""
    return run_trainer(PartTrainer, cfg)


class PartTrainer(EpochTrainer):
    """``semmae parts train`` on the trainer: the part head + decoder's step (Eq. 7) on frozen-encoder features,
    logs with the maps' usage every ``--log-every`` steps, and each epoch the collapse diagnostics and a panel."""

    verb, kind = "parts train", "parts"
    ckpt_name = CHECKPOINT_NAME
    sum_keys = None  # every term of the part loss, averaged per epoch

    def build(self) -> None:
        cfg, info, device = self.cfg, self.dist, self.device
        if self.resumed is not None:
            # a field an older checkpoint does not record had its default then (e.g. similarity = "dot")
            old = {**config_to_dict(PartsTrainConfig()), **(self.resumed.config or {})}
            changed = [k for k in _MODEL_FIELDS if old.get(k) != config_to_dict(cfg).get(k)]
            if changed:
                raise UserError(
                    f"{self.resumed_from} was trained with other model settings ({', '.join(changed)}); "
                    "use another --out or --overwrite"
                )
        self.enc_spec = FrozenEncoderSpec(
            arch=cfg.encoder,
            checkpoint=cfg.encoder_checkpoint,
            img_size=cfg.img_size,
            feature_layer=cfg.feature_layer,
        )
        state = self.resumed.extra.get("encoder_state") if self.resumed is not None else None
        encoder = build_encoder(self.enc_spec, state).to(device)
        self.encoder_state = (
            None if cfg.encoder_checkpoint else {k: v.cpu() for k, v in encoder.vit.state_dict().items()}
        )
        self.record = _record_of(encoder)
        self.model_core = PartModel(head_spec(cfg, encoder)).to(device)
        self.model = DistributedDataParallel(self.model_core) if info.enabled else self.model_core

        self.whole = ImageFolderDataset(cfg.data, transform=uint8_image_transform(encoder.img_size))
        if len(self.whole) == 0:
            raise UserError(f"no images found under {cfg.data}")
        max_bytes = int(cfg.feature_cache_gb * 2**30)
        # the collapse diagnostics' fixed images, spread over the (class-sorted) dataset
        n = len(self.whole)
        diag_index = torch.linspace(0, n - 1, min(cfg.diag_images, n)).round().long().unique()
        if cfg.features == "cached":
            workers = worker_plan(cfg.num_workers, device.type).count
            cache = FeatureCache.build(
                encoder,
                self.whole,
                cfg.batch_size,
                workers,
                device,
                max_bytes,
                progress=info.is_main,
                precision=self.precision,
            )
            self.diag = cache.subset(diag_index)
            self.batches = CachedBatches(cache, cfg.batch_size, info.rank, info.world_size, cfg.seed, device)
        else:
            self.diag = FeatureCache.build(
                encoder,
                Subset(self.whole, diag_index.tolist()),
                cfg.batch_size,
                0,
                device,
                max_bytes,
                progress=False,
                precision=self.precision,
            )
            self.batches = OnlineBatches(cfg, encoder, info, device, self.precision.autocast)
        self.steps_per_epoch = self.batches.steps_per_epoch
        if cfg.steps_per_epoch:
            self.steps_per_epoch = min(cfg.steps_per_epoch, self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        # AdamW without weight decay on biases and 1-D gains (norms, AdaIN biases); the cosine spans every step and
        # the warm-up from min_lr replaces its start (the schedule this stage has always used)
        self.optimizer = adamw(param_groups(self.model_core, cfg.weight_decay), lr=cfg.lr)  # fused on CUDA
        self.lr_schedule = cosine_schedule(
            cfg.lr,
            cfg.min_lr,
            self.total_steps,
            int(round(cfg.warmup_epochs * self.steps_per_epoch)),
            warmup_start=cfg.min_lr,
            after_warmup=False,
        )
        self.means: dict[str, float] | None = None
        self.usage = self.resumed.extra.get("diagnostics") if self.resumed is not None else None

    def epoch_batches(self, epoch: int, start: int, rng: dict | None):
        return self.batches.epoch(epoch, start, rng)

    def loader_rng(self):
        return self.batches.rng_state()

    def set_loader_rng(self, state) -> None:
        self.batches.set_rng_state(state)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        images, f_c, f = batch
        with self.precision.autocast():
            out = self.model(f_c, f)
        self.maps = out["maps"]
        cfg = self.cfg
        return part_loss(
            out["recon"].float(), images, out["maps"].float(), cfg.div_weight, cfg.concentration_weight
        )

    def explain(self, step: int) -> str:
        return f"part loss became non-finite at step {step}; {self.kept()} (try a lower --lr)"

    # ------------------------------------------------------------------------------------------ checkpoints
    def encoder_record(self) -> EncoderRecord | None:
        return self.record

    def checkpoint_extras(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "head": spec_dict(self.model_core.spec),
            "frozen_encoder": spec_dict(self.enc_spec),
            "encoder_state": self.encoder_state,
            "metrics": self.means,
            "diagnostics": self.usage,
        }

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        load_states(path, ckpt, model=self.model_core)
        self.means = ckpt.extra.get("metrics")

    def load_optimizer_state(self, path: Path, ckpt: TrainState) -> None:
        try:
            load_optimizer_state(self.optimizer, ckpt.optimizer)
        except (ValueError, TypeError):
            load_states(path, ckpt, optimizer=self.optimizer)  # the one-line message of a misfit

    # ---------------------------------------------------------------------------------------------- the run
    def begin_run(self) -> None:
        if self.is_main:
            cfg = self.cfg
            self.logger.log(
                self.step,
                event="start",
                images=len(self.whole),
                features=cfg.features,
                steps_per_epoch=self.steps_per_epoch,
                effective_batch_size=cfg.batch_size * self.dist.world_size,
                lr=cfg.lr,
                resumed_epoch=self.epoch,
            )

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        if self.step % self.cfg.log_every == 0:
            vals = {k: v.item() for k, v in losses.items()}
            lr = self.optimizer.param_groups[0]["lr"]
            self.logger.log(self.step, epoch=self.epoch, lr=lr, **vals, **part_usage(self.maps))

    def epoch_end(self, epoch: int) -> None:
        sums, steps = self.epoch_sums, self.epoch_steps
        self.means = {f"epoch_{k}": v.item() / max(1, steps) for k, v in sums.items()}
        if self.is_main:
            cfg = self.cfg
            self.usage = diagnose(self.model_core, self.diag, self.device, cfg.batch_size)
            usage = {f"epoch_{k}": v for k, v in self.usage.items()}
            self.logger.log(self.step, epoch=epoch + 1, **self.means, **usage)
            panel = _panel(self.model_core, self.diag, cfg.panel_images, self.device)
            save_png(panel, Path(cfg.out) / "panels" / f"epoch_{epoch + 1:03d}.png")
            self.logger.add_image("parts/panel", torch.from_numpy(panel).permute(2, 0, 1), self.step)

    def stop_place(self) -> str:
        steps = self.steps_in_epoch()
        if steps is None:
            return f"step {self.step} (the end of epoch {self.epoch})"
        return f"step {self.step} (epoch {self.epoch + 1}, step {steps}/{self.steps_per_epoch})"

    def end_run(self) -> Path:
        if self.is_main and self.usage is not None:
            print(collapse_verdict(self.usage, self.cfg.num_parts), flush=True)
        return self.ckpts.path_for(self.step)


def _record_of(encoder: FrozenEncoder) -> EncoderRecord | None:
    """The frozen encoder's record (:func:`semmae.models.encoder_record.vit_record`), None for a ViT that is not a
    plain timm one."""
    try:
        return vit_record(encoder.vit)[0]
    except UserError:
        return None


@torch.no_grad()
def diagnose(model: PartModel, diag: FeatureCache, device: torch.device, batch_size: int) -> dict[str, float]:
    """Collapse diagnostics (:mod:`semmae.parts.diagnostics`) of the maps on the fixed diagnostic images."""
    was_training = model.training
    model.eval()
    maps = []
    for i in range(0, len(diag), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(diag)))
        _, f_c, f = diag.batch(idx, torch.zeros_like(idx, dtype=torch.bool), device)
        maps.append(model.part_maps(f_c, f).float().cpu())
    model.train(was_training)
    return part_usage(torch.cat(maps))


class CachedBatches:
    """``--features cached``: each epoch a seeded permutation of the images, each with a seeded random flip,
    sharded over ranks; yields ``(images, F_c, F)`` from the :class:`FeatureCache` (no encoder, no decoding)."""

    def __init__(
        self,
        cache: FeatureCache,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        device: torch.device,
    ):
        self.cache, self.batch_size, self.device = cache, batch_size, device
        self.rank, self.world_size, self.seed = rank, world_size, seed
        per_rank = len(cache) // world_size
        self.steps_per_epoch = max(1, per_rank // batch_size)

    def epoch(self, epoch: int, start: int = 0, rng: dict | None = None):
        """The epoch's batches from its ``start``-th (``rng``: the RNG state to put back first)."""
        if rng is not None:
            set_rng_state(rng)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.cache), generator=gen)
        flips = torch.rand(len(self.cache), generator=gen) < 0.5
        shard = perm[self.rank :: self.world_size]
        for it in range(start, self.steps_per_epoch):
            idx = shard[it * self.batch_size : (it + 1) * self.batch_size]
            yield self.cache.batch(idx, flips[idx], self.device)

    def rng_state(self) -> None:
        """Nothing: an epoch's order follows from its number."""
        return None

    def set_rng_state(self, state) -> None:
        pass


class OnlineBatches:
    """``--features online``: RandomResizedCrop + flip views decoded by a DataLoader, encoded every step."""

    def __init__(self, cfg: PartsTrainConfig, encoder: FrozenEncoder, info, device: torch.device, autocast):
        dataset = ImageFolderDataset(
            cfg.data, transform=train_transform(encoder.img_size, (cfg.crop_scale_min, 1.0))
        )
        self.sampler = (
            DistributedSampler(dataset, info.world_size, info.rank, seed=cfg.seed)
            if info.enabled
            else RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
        )
        workers = worker_plan(cfg.num_workers, device.type)
        self.loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            pin_memory=device.type == "cuda",
            drop_last=len(dataset) >= cfg.batch_size * info.world_size,
            persistent_workers=workers.count > 0,
            **workers.loader_args,
        )
        self.encoder, self.device, self.autocast = encoder, device, autocast
        self.steps_per_epoch = len(self.loader)

    def rng_state(self) -> torch.Tensor | None:
        """The shuffle's generator (one process: it runs on from epoch to epoch), else None (the epoch's number)."""
        return None if isinstance(self.sampler, DistributedSampler) else self.sampler.generator.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None and not isinstance(self.sampler, DistributedSampler):
            self.sampler.generator.set_state(state)

    def epoch(self, epoch: int, start: int = 0, rng: dict | None = None):
        """The epoch's batches from its ``start``-th: the ones before are loaded again but not encoded, then ``rng``
        is put back (:func:`~semmae.engine.termination.replayed`)."""
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        for batch in replayed(self.loader, start, rng):
            yield self.encode(batch["image"].to(self.device, non_blocking=True))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch as :meth:`PartTrainer.forward` takes it: ``(images, F_c [B, D], F [B, L, D])`` of the views
        ``images`` [B, 3, S, S] (on the device), the frozen encoder run under the run's autocast. The per-step
        encoder cost of this mode (benchmarks/bench_parts.py times it with the step)."""
        with self.autocast():
            feats = self.encoder(images)
        return images, feats["cls"], feats["patches"]
