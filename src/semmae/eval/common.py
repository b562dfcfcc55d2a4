"""What every evaluation command shares (paper Sec. 4 protocols): the data/encoder flags, the frozen-feature
extraction loop (DDP-sharded, exact: no padded duplicates), top-k accuracy, precision and the results file."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler
from tqdm import tqdm

from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.transforms import eval_geometry, eval_transform, train_transform
from semmae.engine.precision import Precision, resolve_precision
from semmae.errors import UserError
from semmae.eval.config import EvalCommonConfig
from semmae.eval.kept_tokens import pooled_kept, resolve_kept_tokens
from semmae.models.encoder_loading import LoadedEncoder, load_encoder
from semmae.models.encoder_record import EncoderRecord
from semmae.models.kept_tokens import KeptTokens
from semmae.models.vit_ops import pooled_features
from semmae.utils.distributed import DistInfo
from semmae.utils.io import atomic_write_json, sha256_file
from semmae.utils.plain_config import config_to_dict


def build_datasets(cfg: EvalCommonConfig, train_tf, val_tf) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """Train/val ImageFolder datasets; refuses a val set whose classes differ from train's."""
    train_dir, val_dir = cfg.split_dirs()
    train = ImageFolderDataset(train_dir, transform=train_tf)
    val = ImageFolderDataset(val_dir, transform=val_tf)
    _check_same_classes(train.classes, val.classes)
    return train, val


def _check_same_classes(train: list[str], val: list[str]) -> None:
    # any classifier is 100 % right on one class: a number that means nothing
    if len(train) < 2 and train == val:
        raise UserError(
            f"the data has {len(train)} class ({', '.join(train) or '-'}); a probe or a k-NN vote needs at least "
            "two class folders under train/ and val/"
        )
    if train != val:
        only_t = sorted(set(train) - set(val))[:5]
        only_v = sorted(set(val) - set(train))[:5]
        raise UserError(
            f"train and val class folders differ (only in train: {only_t or '-'}; only in val: {only_v or '-'})"
        )


# a view: ("center", None) = the evaluation crop; ("augment", (min_scale, 1)) = RandomResizedCrop + flip
View = tuple[str, "tuple[float, float] | None"]
CENTER: View = ("center", None)


def view_transform(view: View, size: int, crop_pct: float):
    """The image transform of a view (no part map)."""
    kind, scale = view
    return eval_transform(size, crop_pct=crop_pct) if kind == "center" else train_transform(size, scale=scale)


def build_view_datasets(
    cfg: EvalCommonConfig, size: int, patch_size: int, train_view: View, val_view: View = CENTER
) -> tuple[Any, Any]:
    """Train/val datasets for a view. With ``--train-parts/--val-parts`` they are
    :class:`~semmae.data.pretrain_dataset.PartImageDataset` s whose foreground (item ``fg`` [L] on the encoder's
    grid) goes through the same crop as the image; otherwise plain ImageFolders."""
    if cfg.train_parts is None:
        return build_datasets(
            cfg, view_transform(train_view, size, cfg.crop_pct), view_transform(val_view, size, cfg.crop_pct)
        )
    train_dir, val_dir = cfg.split_dirs()
    train = _part_dataset(train_dir, cfg.train_parts, size, patch_size, train_view, cfg.crop_pct)
    val = _part_dataset(val_dir, cfg.val_parts, size, patch_size, val_view, cfg.crop_pct)
    _check_same_classes(train.classes, val.classes)
    return train, val


def _part_dataset(root, cache, size: int, patch_size: int, view: View, crop_pct: float):
    from semmae.data.pretrain_dataset import PartImageDataset

    kind, scale = view
    geometry = eval_geometry(size, crop_pct) if kind == "center" else None
    return PartImageDataset(
        root, cache, size, patch_size, scale=scale, hflip=kind != "center", geometry=geometry
    )


def set_view(dataset, view: View, size: int, patch_size: int, crop_pct: float) -> None:
    """Switch a dataset of :func:`build_view_datasets` to another view (fast linear probe's augmented passes)."""
    from semmae.data.transforms import JointPartTransform

    if hasattr(dataset, "joint"):
        kind, scale = view
        geometry = eval_geometry(size, crop_pct) if kind == "center" else None
        dataset.joint = JointPartTransform(
            size, patch_size, scale=scale, hflip=kind != "center", geometry=geometry
        )
    else:
        dataset.transform = view_transform(view, size, crop_pct)


def resolve_tokens(cfg: EvalCommonConfig, record: EncoderRecord) -> KeptTokens | None:
    """The run's token choice for the encoder ``record`` describes (None = every patch); see
    :mod:`semmae.eval.kept_tokens`."""
    return resolve_kept_tokens(
        cfg.tokens, cfg.keep_fraction, cfg.train_parts is not None, record.fg_keep, cfg.seed
    )


def batch_features(
    encoder: torch.nn.Module, batch: dict, device: torch.device, pool: str, keep: KeptTokens | None
) -> torch.Tensor:
    """Pooled frozen features ``[B, D]`` of a batch: every patch, or the kept ones at their positions."""
    if keep is None:
        return pooled_features(encoder, batch["image"].to(device, non_blocking=True), pool)
    return pooled_kept(encoder, batch, device, pool, keep)


# the EvalCommonConfig fields that are load_encoder arguments of the same name
ENCODER_FLAGS = ("arch", "img_size", "random_init", "num_heads", "init")


def build_encoder_from_config(cfg: EvalCommonConfig, **kw: Any) -> LoadedEncoder:
    """The encoder of ``cfg.checkpoint`` (:func:`load_encoder`) with the run's encoder flags; ``kw`` adds more
    ``load_encoder`` arguments (``global_pool``, ``drop_path_rate``, ...)."""
    return load_encoder(cfg.checkpoint, **{k: getattr(cfg, k) for k in ENCODER_FLAGS}, **kw)


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` takes indices ``r, r + w, ...`` - no padding, so summed metrics are exact."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def loader(
    dataset,
    batch_size: int,
    num_workers: int,
    sampler=None,
    shuffle: bool = False,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=False,
        generator=generator,
    )


def shuffled_loader(dataset, batch_size: int, cfg: EvalCommonConfig, info: DistInfo) -> DataLoader:
    """A training loader: a seeded shuffle each epoch (``DistributedSampler`` under torchrun), whole batches only;
    its ``generator`` is the order's state a resumed run puts back."""
    sampler = (
        DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        if info.enabled
        else None
    )
    g = torch.Generator().manual_seed(cfg.seed)
    return loader(
        dataset, batch_size, cfg.num_workers, sampler=sampler, shuffle=True, drop_last=True, generator=g
    )


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    dataset,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    pool: str = "token",
    precision: Precision | None = None,
    dist_info: DistInfo | None = None,
    desc: str = "features",
    keep: KeptTokens | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features of a whole dataset: (features float32 [N, D], labels long [N]) in dataset order.

    Under DDP every rank encodes its shard and the shards are gathered, so every rank returns all N rows.
    ``keep``: feed only the kept patches (:mod:`semmae.eval.kept_tokens`); None = every patch.
    """
    info = dist_info or DistInfo()
    encoder.eval()
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    feats, labels, index = [], [], []
    for batch in tqdm(
        loader(dataset, batch_size, num_workers, sampler=sampler),
        desc=desc,
        disable=not info.is_main,
        leave=False,
    ):
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            f = batch_features(encoder, batch, device, pool, keep)
        feats.append(f.float())
        labels.append(batch["label"].to(device))
        index.append(batch["index"].to(device))
    dim = getattr(encoder, "embed_dim", None) or (feats[0].shape[1] if feats else 0)
    f = torch.cat(feats) if feats else torch.zeros(0, dim, device=device)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    i = torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=device)
    if info.enabled:
        f, y, i = _gather_rows(f, y, i, info.world_size)
    out_f = torch.empty(len(dataset), f.shape[1], device=f.device)
    out_y = torch.empty(len(dataset), dtype=torch.long, device=f.device)
    out_f[i], out_y[i] = f, y
    return out_f, out_y


def feature_options(
    cfg: EvalCommonConfig, device: torch.device, info: DistInfo, keep: KeptTokens | None
) -> dict:
    """The keyword arguments of :func:`extract_features` that a run's config decides (``cfg.pool`` included)."""
    return dict(
        device=device,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pool=cfg.pool,
        precision=resolve_precision(cfg.precision, device),
        dist_info=info,
        keep=keep,
    )


def _gather_rows(f: torch.Tensor, y: torch.Tensor, i: torch.Tensor, world: int):
    """all_gather of per-rank row blocks of different lengths (padded to the longest, then trimmed)."""
    n = torch.tensor([f.shape[0]], device=f.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros((m - t.shape[0], *t.shape[1:]))]) if t.shape[0] < m else t

    out = []
    for t in (f, y, i):
        parts = [torch.zeros_like(pad(t)) for _ in range(world)]
        dist.all_gather(parts, pad(t))
        out.append(torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]))
    return tuple(out)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the k highest logits, for each k (k clipped to the class count)."""
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices
    hit = top == labels[:, None]
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def file_sha256(path: str | Path | None) -> str | None:
    if path is None:
        return None
    if Path(path).is_dir():  # a timm model folder: its weights
        from semmae.models.timm_dir import WEIGHTS_NAME

        path = Path(path) / WEIGHTS_NAME
    return sha256_file(path)


#: top-5 accuracy means something only with more classes than 5 (with 5 or fewer it is 100 % by construction)
TOP5_MIN_CLASSES = 6


def without_trivial_top5(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with every ``*top5`` entry (also in lists of per-setting rows) None when
    ``metrics["num_classes"]`` is under :data:`TOP5_MIN_CLASSES`."""
    if metrics.get("num_classes", TOP5_MIN_CLASSES) >= TOP5_MIN_CLASSES:
        return metrics

    def clear(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: None if k.endswith("top5") else clear(v) for k, v in value.items()}
        return [clear(v) for v in value] if isinstance(value, list) else value

    return clear(metrics)


def write_results(out: str | Path, cfg: Any, encoder: LoadedEncoder, metrics: dict[str, Any]) -> dict:
    """``results.json``: the metrics (top-5 only with more than 5 classes), the exact checkpoint (path + SHA-256 +
    layout; no hash for a random-init encoder, which reads no weights) and the resolved config."""
    ckpt = getattr(cfg, "checkpoint", None)
    random_init = bool(getattr(cfg, "random_init", False))
    results = {
        **without_trivial_top5(metrics),
        "checkpoint": ckpt,
        "checkpoint_sha256": file_sha256(ckpt) if ckpt and not random_init else None,
        "random_init": random_init,
        "encoder": encoder.summary(),
        "config": config_to_dict(cfg),
    }
    atomic_write_json(Path(out) / "results.json", results)
    return results
