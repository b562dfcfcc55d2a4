"""Online kNN during pretraining (``--eval-every K``): a cheap signal of representation quality in a long run.

Rank 0 encodes a labelled held-out pair of folders (``--eval-train`` as the memory bank, ``--eval-val`` as
queries; eval transform: resize + centre crop) with the *unmasked* encoder's class token and scores the weighted
kNN classifier of :func:`semmae.engine.knn_vote.knn_accuracy` (DINO protocol, cosine similarity, T = 0.07). The other
ranks wait at a barrier; the folders are meant to be small (a few thousand images).

A run that feeds the encoder only the most-foreground share of its patches (``--fg-keep < 1``, the paper's
patch-8 setting) is scored on the same share, as ``semmae knn`` scores its checkpoint (``--tokens auto``): the
patches are picked by the encoder's own last-layer class-token attention (the ``attention`` foreground of
:mod:`semmae.models.foreground`; the held-out folders have no part caches), with the same seeded tie-break.
"""

from __future__ import annotations

import contextlib

import torch

from semmae.data.loader import DataLoader
from semmae.engine.config import PretrainConfig
from semmae.engine.knn_vote import knn_accuracy
from semmae.engine.precision import Precision, resolve_precision
from semmae.models.foreground import encoder_foreground
from semmae.models.kept_tokens import KeptTokens
from semmae.utils import distributed as du


@torch.no_grad()
def encode_folder(
    model: torch.nn.Module,
    root: str,
    img_size: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    keep: KeptTokens | None = None,
    precision: Precision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-token features ``[N, D]`` (float32, CPU) and labels ``[N]`` of an ImageFolder; with ``keep`` only
    the kept patches enter (picked by the model's own attention: ``encoder_foreground``). The encoder runs under
    ``precision``'s autocast (the run's; None = float32)."""
    from semmae.data.folder import ImageFolderDataset
    from semmae.data.transforms import eval_transform

    ds = ImageFolderDataset(root, transform=eval_transform(img_size))
    feats, labels = [], []
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=num_workers, shuffle=False):
        images = batch["image"].to(device, non_blocking=True)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            keep_index = None
            if keep is not None:
                keep_index = keep.keep_index(encoder_foreground(model, images), batch["index"])
            if keep_index is None:
                cls, _ = model.forward_encoder_features(images)
            else:
                cls, _ = model.forward_encoder_features(images, keep_index)
        feats.append(cls.float().cpu())
        labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def online_knn(
    model: torch.nn.Module, cfg: PretrainConfig, device: torch.device, is_main: bool
) -> dict[str, float] | None:
    """``{"knn_top1", "knn_top5"}`` on rank 0 (None elsewhere). Collective: call on every rank.

    ``model`` has ``forward_encoder_features(images, keep_index=None) -> (cls [B, D], patches)`` (and, for
    ``fg_keep < 1``, ``last_cls_attention(images) -> [B, H, L]``); ``cfg`` is any run config with
    ``img_size``, ``batch_size``, ``num_workers``, ``eval_train``, ``eval_val`` and ``knn_k`` (``semmae
    pretrain``'s and ``semmae bootstrap``'s)."""
    result = None
    if is_main:
        from semmae.data.workers import parse_num_workers

        was_training = model.training
        model.eval()
        workers = parse_num_workers(cfg.num_workers)
        args = (cfg.img_size, cfg.batch_size, min(1 if workers is None else workers, 2), device)
        fraction = float(getattr(cfg, "fg_keep", 1.0))
        keep = KeptTokens(fraction, "attention", cfg.seed) if fraction < 1.0 else None
        precision = resolve_precision(cfg.precision, device)  # the run's autocast
        train_f, train_y = encode_folder(model, cfg.eval_train, *args, keep=keep, precision=precision)
        val_f, val_y = encode_folder(model, cfg.eval_val, *args, keep=keep, precision=precision)
        model.train(was_training)
        acc = knn_accuracy(train_f, train_y, val_f, val_y, k=cfg.knn_k)
        result = {f"knn_{k}": float(v) for k, v in acc.items()}
    du.barrier()
    return result
