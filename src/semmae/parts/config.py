"""Configs of ``semmae parts train | export | show | eval`` (paper Sec. 3.1). Defaults are the paper's setting:
an iBOT ViT-S/16 encoder at 224 px, 6 parts, blur kernel 7, lambda = 0.03."""

from __future__ import annotations

from dataclasses import dataclass

from semmae.config import logger_option, option
from semmae.data.workers import check_num_workers
from semmae.engine.run_options import (
    check_resume_overwrite,
    overwrite_option,
    precision_option,
    resume_option,
)
from semmae.errors import UserError

SOFTMAX_AXES = ("positions", "parts")
#: how Eq. 2 compares a part token with a patch token: the paper's dot product, or the cosine of the two
#: projections divided by a temperature (so the maps' sharpness does not depend on the encoder's token norms)
SIMILARITIES = ("dot", "cosine")
WORKERS_HELP = "data-loading worker processes, or 'auto': what the cores leave after the encoder's work"
FEATURE_MODES = ("online", "cached")


@dataclass
class PartsTrainConfig:
    data: str = option("", "image folder (ImageFolder layout) to learn parts on")
    out: str = option("runs/parts", "run directory (checkpoints, panels, logs)")
    encoder: str = option(
        "vit_small_patch16_224",
        "ViT of a random-init frozen encoder (no --encoder-checkpoint): vit_<size>_patch<p>[_<img>]",
    )
    encoder_checkpoint: str | None = option(
        None,
        "encoder weights (iBOT/DINO/MAE/timm/semmae layouts) or run folder; none = random init",
        checkpoint=True,
    )
    img_size: int = option(224, "input resolution (pixels)")
    feature_layer: int = option(
        0, "encoder block giving F_c and F: 0 = the last (paper), -k = k blocks before the last"
    )
    num_parts: int = option(6, "number of part tokens N (Eq. 1)")
    token_hidden_dim: int = option(0, "hidden width of W1_i in Eq. 1; 0 = encoder width")
    proj_dim: int = option(256, "width of the W_p / W projections in Eq. 2")
    softmax_over: str = option(
        "positions",
        "softmax axis of Eq. 2: over parts per position, or over positions per part",
        choices=SOFTMAX_AXES,
    )
    scale_logits: bool = option(True, "divide Eq. 2 dot-product logits by sqrt(proj_dim) (--similarity dot)")
    similarity: str = option(
        "dot",
        "Eq. 2 score: dot = the paper's F_p^T W_p^T W F; cosine = cosine of the projections / --temperature "
        "(maps start as a soft clustering of the tokens, not near-uniform; docs/parts.md)",
        choices=SIMILARITIES,
    )
    temperature: float = option(0.1, "temperature of --similarity cosine")
    blur_kernel: int = option(7, "Gaussian blur kernel (odd) applied to the maps in the decoder")
    blur_sigma: float = option(0.0, "blur sigma; 0 = derived from the kernel size")
    decoder_dim: int = option(256, "decoder channels at grid resolution")
    decoder_min_dim: int = option(32, "fewest decoder channels after halving per upsampling")
    decoder_convs: int = option(2, "styled 3x3 convs at grid resolution before upsampling")
    div_weight: float = option(0.03, "lambda of Eq. 7 (diversity weight)")
    concentration_weight: float = option(
        0.0,
        "weight of the SCOPS concentration term (spatial variance of each map; beyond the paper, 0 = off)",
    )
    features: str = option(
        "online",
        "online = encoder runs every step on RandomResizedCrop + flip views; cached = tokens of every image "
        "and its flip computed once, reused each epoch (far cheaper steps; no crops)",
        choices=FEATURE_MODES,
    )
    feature_cache_gb: float = option(8.0, "largest token cache --features cached may hold in memory (GiB)")
    diag_images: int = option(256, "training images (whole view) the per-epoch collapse diagnostics use")
    epochs: int = option(20, "training epochs")
    steps_per_epoch: int = option(0, "cap on steps per epoch; 0 = one pass over the data")
    batch_size: int = option(64, "images per step per process")
    lr: float = option(5e-4, "AdamW peak learning rate")
    min_lr: float = option(1e-6, "cosine schedule floor")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases/gains)")
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs")
    clip_grad: float = option(1.0, "gradient-norm clip; 0 = off")
    crop_scale_min: float = option(0.5, "RandomResizedCrop smallest area fraction")
    precision: str = precision_option()
    num_workers: str = option("auto", WORKERS_HELP)
    panel_images: int = option(8, "images in the per-epoch image/recon/parts panel")
    log_every: int = option(20, "steps between log records")
    logger: str = logger_option()
    resume: str | None = resume_option("auto")
    overwrite: bool = overwrite_option()
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    seed: int = option(0, "random seed")

    def validate(self) -> None:
        check_resume_overwrite(self.resume, self.overwrite)
        if not self.data:
            raise UserError("--data is required: an image folder to learn parts on")
        for name in (
            "img_size",
            "num_parts",
            "proj_dim",
            "decoder_dim",
            "decoder_min_dim",
            "epochs",
            "batch_size",
            "panel_images",
            "log_every",
            "diag_images",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.num_parts < 2:
            raise UserError(f"--num-parts must be >= 2 (Eq. 6 compares parts), got {self.num_parts}")
        from semmae.data.part_cache import MAX_PARTS  # here: the module imports torch, --help does not

        if self.num_parts > MAX_PARTS:
            raise UserError(
                f"--num-parts {self.num_parts}: a part cache (`semmae parts export`, what masking reads) holds at "
                f"most {MAX_PARTS} parts; pass --num-parts {MAX_PARTS} or fewer"
            )
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise UserError(f"--blur-kernel must be a positive odd number, got {self.blur_kernel}")
        if not 0 < self.crop_scale_min <= 1:
            raise UserError(f"--crop-scale-min must be in (0, 1], got {self.crop_scale_min}")
        if self.clip_grad < 0:
            raise UserError(f"--clip-grad must be >= 0 (0 = off), got {self.clip_grad}")
        if self.similarity == "cosine" and not self.temperature > 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if not self.feature_cache_gb > 0:
            raise UserError(f"--feature-cache-gb must be > 0, got {self.feature_cache_gb}")
        if self.concentration_weight < 0:
            raise UserError(f"--concentration-weight must be >= 0, got {self.concentration_weight}")
        if self.lr <= 0 or self.div_weight < 0 or self.steps_per_epoch < 0 or self.decoder_convs < 0:
            raise UserError("--lr must be > 0 and --div-weight, --steps-per-epoch, --decoder-convs >= 0")
        check_num_workers(self.num_workers)


#: what ``semmae parts export`` writes per cell: the learned parts of a part checkpoint, the raw-attention
#: baseline of Table 4 (the argmax over the frozen encoder's last-layer CLS-attention heads), or ground-truth
#: label masks (the oracle parts: what perfect part learning would hand to the masking)
EXPORT_SOURCES = ("learned", "attention", "masks")


@dataclass
class PartsExportConfig:
    data: str = option("", "image folder to export part maps for")
    source: str = option(
        "learned",
        "learned = the parts of --checkpoint (a part checkpoint); attention = raw-attention parts (paper "
        "Table 4's baseline: argmax over the last-layer CLS-attention heads of --encoder-checkpoint); "
        "masks = oracle parts from the ground-truth label PNGs under --masks (majority label per cell)",
        choices=EXPORT_SOURCES,
    )
    checkpoint: str = option(
        "", "part checkpoint written by 'semmae parts train', or its run folder", checkpoint=True
    )
    encoder_checkpoint: str = option(
        "",
        "--source attention: encoder weights (iBOT/DINO/MAE/timm/semmae layouts) or run folder",
        checkpoint=True,
    )
    img_size: int = option(
        0, "--source attention: encoder input size (the part encoder's); 0 = the checkpoint's own"
    )
    masks: str = option(
        "",
        "--source masks: folder of per-image label PNGs (0 = background, 1..K parts; same relative paths, "
        "e.g. <synth>/masks/train); background becomes part 0",
    )
    out: str = option("", "part-cache path to write (resumes an unfinished one)")
    grid: int = option(0, "cache grid G (the MAE's patch grid, e.g. 14 or 28); 0 = encoder grid")
    batch_size: int = option(64, "images per forward pass")
    num_workers: str = option("auto", WORKERS_HELP)
    precision: str = precision_option()
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    seed: int = option(0, "random seed (export itself is deterministic)")
    overwrite: bool = option(False, "replace a finished cache already at --out")

    def validate(self) -> None:
        for name in ("data", "out"):
            if not getattr(self, name):
                raise UserError(f"--{name} is required")
        if self.source == "masks":
            if not self.masks:
                raise UserError("--source masks needs --masks: the folder of ground-truth label PNGs")
            if self.checkpoint or self.encoder_checkpoint or self.img_size:
                raise UserError(
                    "--source masks reads only --masks; --checkpoint, --encoder-checkpoint and --img-size are "
                    "for the learned and attention sources"
                )
            if self.grid < 1:
                raise UserError("--source masks needs --grid: the cache grid (the MAE's patch grid), e.g. 8")
        elif self.masks:
            raise UserError(f"--masks is for --source masks, not --source {self.source}")
        elif self.source == "learned":
            if not self.checkpoint:
                raise UserError("--checkpoint is required: the part checkpoint whose parts are exported")
            if self.encoder_checkpoint or self.img_size:
                raise UserError(
                    "--encoder-checkpoint and --img-size are for --source attention; learned parts take the "
                    "encoder the part checkpoint names"
                )
        else:
            if not self.encoder_checkpoint:
                raise UserError(
                    "--source attention needs --encoder-checkpoint: the encoder whose attention is read"
                )
            if self.checkpoint:
                raise UserError(
                    "--source attention reads the encoder from --encoder-checkpoint; --checkpoint (a part "
                    "checkpoint) is for --source learned"
                )
        if self.grid < 0 or self.batch_size < 1 or self.img_size < 0:
            raise UserError("--grid and --img-size must be >= 0 and --batch-size >= 1")
        check_num_workers(self.num_workers)


@dataclass
class PartsShowConfig:
    data: str = option("", "image folder to draw from")
    checkpoint: str = option(
        "", "part checkpoint written by 'semmae parts train', or its run folder", checkpoint=True
    )
    out: str = option("parts.png", "PNG to write")
    overwrite: bool = option(False, "replace a figure semmae drew earlier at --out (never any other file)")
    num_images: int = option(8, "images (rows) in the grid")
    grid: int = option(0, "grid the parts are drawn at; 0 = encoder grid")
    masks: str | None = option(
        None, "folder of ground-truth label PNGs (same relative paths): adds a ground-truth column (Fig. 4)"
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    seed: int = option(0, "picks which images are drawn")

    def validate(self) -> None:
        for name in ("data", "checkpoint"):
            if not getattr(self, name):
                raise UserError(f"--{name} is required")
        if self.num_images < 1 or self.grid < 0:
            raise UserError("--num-images must be >= 1 and --grid >= 0")


@dataclass
class PartsEvalConfig:
    data: str = option("", "image folder the cache was exported from")
    cache: str = option("", "part cache written by 'semmae parts export'")
    masks: str | None = option(
        None, "folder of per-image label PNGs (0 = background, 1..K parts), same relative paths"
    )
    keypoints: str | None = option(
        None, "CUB-style keypoints.csv (file, part_id, x, y, visible) or the folder holding it"
    )
    checkpoint: str | None = option(
        None,
        "part checkpoint (or run folder) for the encoder baselines; default: the one the cache names",
        checkpoint=True,
    )
    baselines: bool = option(True, "also score raw attention, k-means, spatial split, ceiling")
    eval_size: int = option(112, "masks are compared at this size (rounded up to a multiple of G)")
    kmeans_fit_tokens: int = option(100000, "patch tokens sampled to fit the k-means baseline")
    batch_size: int = option(64, "images per encoder pass (baselines)")
    num_workers: str = option("auto", WORKERS_HELP)
    out: str | None = option(None, "metrics JSON path; default: part_metrics.json beside the cache")
    overwrite: bool = option(
        False,
        "replace metrics semmae wrote earlier at --out (the default file beside the cache is always replaced)",
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    seed: int = option(0, "k-means seed")

    def validate(self) -> None:
        for name in ("data", "cache"):
            if not getattr(self, name):
                raise UserError(f"--{name} is required")
        if self.eval_size < 1 or self.batch_size < 1 or self.kmeans_fit_tokens < 1:
            raise UserError("--eval-size, --batch-size and --kmeans-fit-tokens must be >= 1")
        check_num_workers(self.num_workers)
