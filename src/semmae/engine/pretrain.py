"""``semmae pretrain``: MAE / SemMAE pretraining on one CPU, one GPU or many nodes (paper Sec. 4.1).

The step loop, checkpoints, precision and logging are the shared :class:`~semmae.engine.step_trainer.StepTrainer`.
What is this stage's own: for each micro-batch the mask is built outside the model (``semmae.masking``; alpha from
this run's own progress ``step / total_steps``), optionally only the most-foreground patches are kept (the paper's
ViT-B/8 setting), packed data is cropped/flipped on the device, and the MAE runs under the run's precision; the
learning rate follows a per-iteration warm-up + cosine array indexed by the global step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, Dataset

from semmae.data.transforms import normalize_batch
from semmae.engine.checkpoint import mismatch
from semmae.engine.config import PART_FREE_HINT, PretrainConfig
from semmae.engine.optim import build_optimizer
from semmae.engine.schedule import cosine_schedule, progress
from semmae.engine.step_trainer import StepTrainer, plan_run
from semmae.engine.trainer import run_trainer
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.models.encoder_record import EncoderRecord
from semmae.utils.seed import mix_seed, seed_everything

AUGMENT_STREAM = 0xA5  # seeds the packed-batch crops/flips apart from the masks of the same (step, shard)


def build_strategy(cfg: PretrainConfig, has_parts: bool | None = None):
    """The masking strategy; refuses a part-guided one (or ``--fg-keep < 1``) without part maps (``--parts``,
    or a pack made with ``--parts``: ``has_parts``)."""
    from semmae.masking import build_masking

    has_parts = bool(cfg.parts) if has_parts is None else has_parts

    try:
        strategy = build_masking(
            cfg.masking, mask_ratio=cfg.mask_ratio, gamma=cfg.gamma, alpha_max=cfg.alpha_max
        )
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


class PackedBatches(Dataset):
    """A pack read a micro-batch at a time: ``batches[[(epoch, index), ...]]`` -> the raw batch of
    :meth:`~semmae.data.packed.PackedImages.get_batch` (augmented later, on the device, by the engine)."""

    def __init__(self, pack):
        self.pack = pack

    def __len__(self) -> int:
        return len(self.pack)

    def __getitem__(self, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        return self.pack.get_batch([i for _, i in keys])


class Pretrainer(StepTrainer):
    """One pretraining run; :meth:`run` trains until the end or ``--max-steps``."""

    verb = "pretrain"

    @classmethod
    def preflight(cls, cfg: PretrainConfig) -> None:
        data_and_masking(cfg)  # fail fast, before touching data

    def build(self) -> None:
        from semmae.data.pretrain_dataset import PartImageDataset
        from semmae.models import create_model

        cfg = self.cfg
        self.packed, self.strategy = data_and_masking(cfg)
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
                normalize=False,  # uint8 through the loader; normalised a batch at a time in prepare()
            )
            self.no_part_id = self.dataset.cache.no_part_id if self.dataset.cache is not None else None
        self.plan = p = plan_run(cfg, self.dist.world_size, len(self.dataset))
        self.lr_schedule = cosine_schedule(p.lr, cfg.min_lr, p.total_steps, p.warmup_steps)
        self.optimizer = build_optimizer(model, p.lr, cfg.weight_decay, tuple(cfg.betas))
        self._last_vis: tuple | None = None

    def loader_items(self) -> tuple[Dataset, dict]:
        if not self.packed:
            return super().loader_items()
        # one item = one micro-batch, copied out of the memory-mapped shards
        sampler = BatchSampler(self.sampler, self.plan.batch_size, drop_last=False)
        return PackedBatches(self.dataset), dict(batch_size=None, sampler=sampler)

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

    def prepare(self, batch: dict[str, torch.Tensor], step: int, shard: int) -> dict[str, torch.Tensor]:
        """A micro-batch -> model inputs on the device. Folder batches arrive as uint8 (cropped and flipped in the
        loader workers) and are normalised here, a batch at a time. Packed batches get their crops/flips drawn from
        ``(seed, step, shard)`` (so they do not depend on the world, like the masks), applied on the device."""
        if self.augment is None:
            image = batch["image"].to(self.device, non_blocking=True)
            return {**batch, "image": normalize_batch(image) if image.dtype == torch.uint8 else image}
        gen = torch.Generator().manual_seed(mix_seed(self.cfg.seed, step, shard, AUGMENT_STREAM))
        raw = {k: batch[k].to(self.device, non_blocking=True) for k in ("pixels", "codes") if k in batch}
        out = self.augment({**raw, "size": batch["size"]}, gen)
        return {**out, "label": batch["label"], "index": batch["index"]}

    def model_state(self) -> TrainState:
        # the encoder record (sizes + the kept fraction) that `export` copies and `load_encoder` reads back
        record = EncoderRecord.from_mae_config(self.model_config, fg_keep=self.cfg.fg_keep)
        return TrainState(model=self.model_core.state_dict(), model_config=self.model_config, encoder=record)

    def load_model_state(self, path: Path, ckpt: TrainState) -> None:
        try:
            self.model_core.load_state_dict(ckpt.model, strict=True)
        except RuntimeError as e:
            raise UserError(
                f"--resume {path}: model does not match --model {self.cfg.model}: {mismatch(e)}"
            ) from None

    # ---------------------------------------------------------------------------------------------- training
    def draws(self, batch_size: int, step: int, shard: int) -> dict[str, Any]:
        """Every random number of one micro-batch's masks, drawn from the generator seeded by ``(seed, step,
        shard)`` (``shard = rank * accum_iter + micro``, so masks do not depend on the world) in the order the
        mask functions would draw them: the foreground keep's tie breaks, then the mask's (with alpha as a
        tensor). Kernel launches only, no host sync; :meth:`forward_step` is then a pure function of tensors."""
        dev, cfg = self.device, self.cfg
        self.mask_gen.manual_seed(mix_seed(cfg.seed, step, shard))
        g = cfg.img_size // self.patch_size
        grid: tuple[int, int] | int = (g, g)
        out: dict[str, Any] = {"progress": progress(step, self.plan.total_steps)}
        if cfg.fg_keep < 1:
            out["fg_keep"] = torch.rand(batch_size, g * g, device=dev, generator=self.mask_gen)
            grid = max(1, int(round(cfg.fg_keep * g * g)))
        k = self.no_part_id + 1 if self.no_part_id is not None else None
        mask_draws = self.strategy.draw(batch_size, grid, out["progress"], self.mask_gen, dev, k)
        if mask_draws is not None:
            out["mask"] = mask_draws
        return out

    def forward_step(
        self,
        imgs: torch.Tensor,
        part_ids: torch.Tensor | None,
        fg: torch.Tensor | None,
        draws: dict[str, Any],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """One micro-batch's forward from its :meth:`draws`: the most-foreground patches (``--fg-keep``, the
        paper's ViT-B/8 setting), the mask (Algorithm 1 or a baseline) and the MAE under the run's precision.
        Returns ``(model output, mask [B, L'], keep_index [B, L'] or None)``. Reads nothing back from the device:
        ``torch._dynamo.explain`` finds no graph break with ``random`` or an Algorithm 1 masking (tested)."""
        from semmae.masking import foreground_keep_index, num_masked

        g = self.cfg.img_size // self.patch_size
        grid: tuple[int, int] | int = (g, g)
        keep_index = None
        if "fg_keep" in draws:
            keep_index = foreground_keep_index(fg, self.cfg.fg_keep, noise=draws["fg_keep"])
            part_ids = part_ids.gather(1, keep_index) if part_ids is not None else None
            fg = fg.gather(1, keep_index)
            grid = keep_index.shape[1]
        mask = self.strategy(
            imgs.shape[0],
            grid,
            draws["progress"],
            None if "mask" in draws else self.mask_gen,  # block / attention draw for themselves
            part_ids=part_ids,
            fg=fg,
            device=self.device,
            no_part_id=self.no_part_id,
            draws=draws.get("mask"),
        )
        n_mask = num_masked(mask.shape[1], self.strategy.mask_ratio)
        with self.precision.autocast():
            out = self.model(imgs, mask, keep_index=keep_index, num_masked=n_mask)
        return out, mask, keep_index

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        dev = self.device
        imgs = batch["image"].to(dev, non_blocking=True)
        part_ids = batch["part_ids"].to(dev, non_blocking=True) if "part_ids" in batch else None
        fg = batch["fg"].to(dev, non_blocking=True) if "fg" in batch else None
        draws = self.draws(imgs.shape[0], self.step, self.shard)
        out, mask, keep_index = self.forward_step(imgs, part_ids, fg, draws)
        self._last_vis = (imgs, mask, out, part_ids, keep_index)
        return {"loss": out["loss"].float()}

    def log_extras(self, step: int, values: dict[str, float]) -> dict[str, Any]:
        done = progress(step, self.plan.total_steps)
        return {"alpha": self.strategy.alpha(done), "progress": done}

    def epoch_end(self, epoch: int) -> None:
        """After epoch ``epoch`` (0-based): panel and online kNN every K epochs (named by finished epochs)."""
        cfg = self.cfg
        done = epoch + 1
        if cfg.vis_every and done % cfg.vis_every == 0 and self.is_main and self._last_vis is not None:
            self._write_panel(done)
        super().epoch_end(epoch)

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


def data_and_masking(cfg: PretrainConfig) -> tuple[bool, Any]:
    """(whether ``--data`` is a pack, the masking strategy): a UserError when the masking needs part cells the data
    has not."""
    from semmae.data.packed import is_pack, read_pack_manifest

    packed = is_pack(cfg.data)
    has_parts = bool(read_pack_manifest(cfg.data).get("parts")) if packed else None
    return packed, build_strategy(cfg, has_parts)


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run ``semmae pretrain`` with a resolved config; returns ``{"step", "loss", "out", "checkpoint"}``."""
    return run_trainer(Pretrainer, cfg)
