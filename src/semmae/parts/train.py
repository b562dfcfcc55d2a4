"""``semmae parts train``: learn part tokens + decoder on a frozen encoder (paper Sec. 3.1, Eq. 7).

Only the part head and decoder are trained (AdamW, cosine schedule with warm-up, per-step updates). The frozen
encoder runs under ``no_grad`` in eval mode and stays outside DDP, so DDP wraps a module whose every parameter
gets a gradient (no unused-parameter search). Launch with ``torchrun --nproc_per_node K -m semmae.cli parts train``
for several processes. Each epoch writes ``checkpoint.pth`` (atomic, plain data) and a panel
``panels/epoch_XXX.png`` (image | reconstruction | parts); an interrupted run continues from the last checkpoint.
SIGTERM writes ``checkpoint.pth`` at the step where it stops (mid-epoch too) and exits 130; the resumed run continues
from that step (:mod:`semmae.engine.termination`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from semmae.config import config_to_dict
from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.transforms import train_transform
from semmae.data.workers import worker_plan
from semmae.engine.nonfinite import NonFiniteWatch, kept_checkpoint
from semmae.engine.optim import param_groups
from semmae.engine.precision import LossScaler, resolve_precision
from semmae.engine.run_options import continues, resume_file
from semmae.engine.schedule import cosine_schedule, set_lr
from semmae.engine.stage_run import run_claimed
from semmae.engine.termination import replayed, sigterm_requests, stopped
from semmae.errors import UserError
from semmae.parts.checkpoint import read_part_checkpoint, spec_dict
from semmae.parts.config import PartsTrainConfig
from semmae.parts.diagnostics import collapse_verdict, part_usage
from semmae.parts.encoder import FrozenEncoder, FrozenEncoderSpec, build_encoder
from semmae.parts.features import FeatureCache, uint8_image_transform
from semmae.parts.loss import part_loss
from semmae.parts.model import PartHeadSpec, PartModel
from semmae.parts.viz import denormalize, grid_image, overlay, save_png
from semmae.utils import distributed as dist_utils
from semmae.utils.io import atomic_torch_save
from semmae.utils.seed import rng_state, seed_everything, set_rng_state

CHECKPOINT_NAME = "checkpoint.pth"
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
    return run_claimed(cfg, "parts train", _train)


def _train(cfg: PartsTrainConfig, info, device: torch.device, run_dir) -> Path:
    continuing = continues(cfg)
    seed_everything(cfg.seed, info.rank)
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT_NAME
    resume_from = resume_file(cfg.resume, ckpt_path, cfg.overwrite)
    resume = read_part_checkpoint(resume_from) if resume_from is not None else None
    if resume is not None:
        # a field an older checkpoint does not record had its default then (e.g. similarity = "dot")
        old = {**config_to_dict(PartsTrainConfig()), **resume["config"]}
        changed = [k for k in _MODEL_FIELDS if old.get(k) != config_to_dict(cfg).get(k)]
        if changed:
            raise UserError(
                f"{resume_from} was trained with other model settings ({', '.join(changed)}); "
                "use another --out or --overwrite"
            )

    enc_spec = FrozenEncoderSpec(
        arch=cfg.encoder,
        checkpoint=cfg.encoder_checkpoint,
        img_size=cfg.img_size,
        feature_layer=cfg.feature_layer,
    )
    encoder = build_encoder(enc_spec, resume.get("encoder_state") if resume else None).to(device)
    encoder_state = (
        None if cfg.encoder_checkpoint else {k: v.cpu() for k, v in encoder.vit.state_dict().items()}
    )
    model = PartModel(head_spec(cfg, encoder)).to(device)
    if resume is not None:
        model.load_state_dict(resume["model"], strict=True)
    ddp = DistributedDataParallel(model) if info.enabled else model

    whole = ImageFolderDataset(cfg.data, transform=uint8_image_transform(encoder.img_size))
    if len(whole) == 0:
        raise UserError(f"no images found under {cfg.data}")
    precision = resolve_precision(cfg.precision, device)
    autocast = precision.autocast
    max_bytes = int(cfg.feature_cache_gb * 2**30)
    # the collapse diagnostics' fixed images, spread over the (class-sorted) dataset
    diag_index = torch.linspace(0, len(whole) - 1, min(cfg.diag_images, len(whole))).round().long().unique()
    if cfg.features == "cached":
        workers = worker_plan(cfg.num_workers, device.type).count
        cache = FeatureCache.build(
            encoder,
            whole,
            cfg.batch_size,
            workers,
            device,
            max_bytes,
            progress=info.is_main,
            precision=precision,
        )
        diag = cache.subset(diag_index)
        batches = CachedBatches(cache, cfg.batch_size, info.rank, info.world_size, cfg.seed, device)
    else:
        diag = FeatureCache.build(
            encoder,
            Subset(whole, diag_index.tolist()),
            cfg.batch_size,
            0,
            device,
            max_bytes,
            progress=False,
            precision=precision,
        )
        batches = OnlineBatches(cfg, encoder, info, device, autocast)
    steps_per_epoch = batches.steps_per_epoch
    if cfg.steps_per_epoch:
        steps_per_epoch = min(cfg.steps_per_epoch, steps_per_epoch)
    total = steps_per_epoch * cfg.epochs

    # AdamW without weight decay on biases and 1-D gains (norms, AdaIN biases); the cosine spans every step and the
    # warm-up from min_lr replaces its start (the schedule this stage has always used)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    lr_schedule = cosine_schedule(
        cfg.lr,
        cfg.min_lr,
        total,
        int(round(cfg.warmup_epochs * steps_per_epoch)),
        warmup_start=cfg.min_lr,
        after_warmup=False,
    )
    scaler, watch = LossScaler(precision), NonFiniteWatch(device)

    def explain(bad: int) -> str:
        return f"part loss became non-finite at step {bad}; {kept_checkpoint(ckpt_path)} (try a lower --lr)"

    start_epoch, step, start_in_epoch, partial, rng_at_stop = 0, 0, 0, None, None
    if resume is not None:
        load_optimizer_state(optimizer, resume["optimizer"])
        start_epoch, step = int(resume["epoch"]), int(resume["step"])
        # a run stopped by SIGTERM mid-epoch: that epoch again from its step (its order, and alone its RNG)
        start_in_epoch, partial = int(resume.get("step_in_epoch", 0)), resume.get("partial")
        if resume.get("batches_rng") is not None:
            batches.set_rng_state(resume["batches_rng"])
        if "rng" in resume and info.world_size == 1:
            set_rng_state(resume["rng"])
            rng_at_stop = resume.get("rng_at_stop")

    # the first write into the run folder, after every check above (a refused resume leaves it as it was)
    logger = run_dir.start(cfg, keep_log_until=step if continuing else None)
    usage = resume.get("diagnostics") if resume is not None else None

    def save(epochs_done: int, means, **extra) -> None:
        """``checkpoint.pth`` after ``epochs_done`` epochs (``extra``: where SIGTERM stopped the next one)."""
        state = {
            "format": "semmae-parts",
            "version": 1,
            "config": config_to_dict(cfg),
            "head": spec_dict(model.spec),
            "encoder": spec_dict(enc_spec),
            "encoder_state": encoder_state,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epochs_done,
            "step": step,
            "rng": rng_state(),
            "batches_rng": batches.rng_state(),
            "metrics": means,
            "diagnostics": usage,
        }
        atomic_torch_save({**state, **extra}, ckpt_path)

    model.train()
    with sigterm_requests() as term:
        if info.is_main:
            eff = cfg.batch_size * info.world_size
            logger.log(
                step,
                event="start",
                images=len(whole),
                features=cfg.features,
                steps_per_epoch=steps_per_epoch,
                effective_batch_size=eff,
                lr=cfg.lr,
                resumed_epoch=start_epoch,
            )
        for epoch in range(start_epoch, cfg.epochs):
            skip = start_in_epoch if epoch == start_epoch else 0
            epoch_start = {"rng": rng_state(), "batches_rng": batches.rng_state()}
            sums: dict[str, torch.Tensor] = {}  # per-epoch loss sums, kept on the device
            if skip and partial:
                sums = {k: torch.tensor(v, device=device) for k, v in partial.items()}
            bar = tqdm(
                total=steps_per_epoch,
                initial=skip,
                desc=f"parts epoch {epoch + 1}/{cfg.epochs}",
                disable=not info.is_main,
                dynamic_ncols=True,
            )
            done, stop = skip, False
            at_stop = rng_at_stop if skip else None
            for images, f_c, f in term.batches(batches.epoch(epoch, skip, at_stop)):
                if done >= steps_per_epoch:
                    break
                set_lr(optimizer, float(lr_schedule[step]))
                with autocast():
                    out_ = ddp(f_c, f)
                losses = part_loss(
                    out_["recon"].float(),
                    images,
                    out_["maps"].float(),
                    cfg.div_weight,
                    cfg.concentration_weight,
                )
                grad_norm = scaler(losses["loss"], optimizer, model.parameters, clip_grad=cfg.clip_grad)
                optimizer.zero_grad(set_to_none=True)
                watch.record(step, losses["loss"].detach(), None if scaler.enabled else grad_norm)
                step += 1
                done += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v.detach()
                bar.update(1)
                if step % cfg.log_every == 0:
                    watch.check(explain)
                    vals = {k: v.item() for k, v in losses.items()}
                    bar.set_postfix(loss=f"{vals['loss']:.4f}", div=f"{vals['div']:.3f}")
                    logger.log(
                        step,
                        epoch=epoch,
                        lr=optimizer.param_groups[0]["lr"],
                        **vals,
                        **part_usage(out_["maps"]),
                    )
                if term.agreed(device):
                    stop = True
                    if (
                        done < steps_per_epoch
                    ):  # after an epoch's last step its loader ends as in a run never stopped
                        break
            bar.close()
            watch.check(explain)
            stop = stop or term.agreed(device)  # also where the loader ended with its workers (group SIGTERM)
            if stop and done < steps_per_epoch:
                if info.is_main:
                    partial_sums = {k: float(v) for k, v in sums.items()}
                    extra = dict(step_in_epoch=done, partial=partial_sums, rng_at_stop=rng_state())
                    save(epoch, None, **extra, **epoch_start)
                dist_utils.barrier()
                logger.close()
                where = f"step {step} (epoch {epoch + 1}, step {done}/{steps_per_epoch})"
                stopped("parts train", where, ckpt_path, info.is_main)
            n = max(1, done)
            means = {f"epoch_{k}": v.item() / n for k, v in sums.items()}
            if info.is_main:
                usage = diagnose(model, diag, device, cfg.batch_size)
                logger.log(step, epoch=epoch + 1, **means, **{f"epoch_{k}": v for k, v in usage.items()})
                panel = _panel(model, diag, cfg.panel_images, device)
                save_png(panel, out / "panels" / f"epoch_{epoch + 1:03d}.png")
                logger.add_image("parts/panel", torch.from_numpy(panel).permute(2, 0, 1), step)
                save(epoch + 1, means)
            dist_utils.barrier()
            if stop and epoch + 1 < cfg.epochs:
                logger.close()
                stopped("parts train", f"step {step} (the end of epoch {epoch + 1})", ckpt_path, info.is_main)
    if info.is_main and usage is not None:
        print(collapse_verdict(usage, cfg.num_parts), flush=True)
    logger.close()
    return ckpt_path


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
            num_workers=workers.count,
            worker_init_fn=workers.init_fn if workers.count else None,
            pin_memory=device.type == "cuda",
            drop_last=len(dataset) >= cfg.batch_size * info.world_size,
            persistent_workers=workers.count > 0,
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
            images = batch["image"].to(self.device, non_blocking=True)
            with self.autocast():
                feats = self.encoder(images)
            yield images, feats["cls"], feats["patches"]
