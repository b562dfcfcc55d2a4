"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, as used by DINO/iBOT):
a cheap representation-quality signal during and after pretraining.

For a query q with L2-normalised feature, take the k training features with the highest cosine similarity
s_j, weight each by exp(s_j / T) and add the weight to its class; the class scores are
``votes[c] = sum_{j in top-k, y_j = c} exp(s_j / T)`` and the prediction is their arg-max (top-5: the five best).
"""

from __future__ import annotations

from semmae.engine.knn_vote import knn_accuracy
from semmae.engine.stage_run import run_claimed
from semmae.eval.common import (
    CENTER,
    build_encoder_from_config,
    build_view_datasets,
    extract_features,
    feature_options,
    resolve_tokens,
    write_results,
)
from semmae.eval.config import KnnConfig
from semmae.utils.seed import seed_everything


def run_knn(cfg: KnnConfig) -> dict:
    """Encode train and val once (center crop), classify val by its neighbours in train, write results.json."""
    # kNN has no state to continue: a rerun with the same settings into its folder replaces the results (and its
    # log); other settings need --overwrite (the earlier evaluation deleted first). The folder still has one writer
    # at a time and is never another verb's run
    return run_claimed(cfg, "knn", _run_knn, resume=not cfg.overwrite)


def _run_knn(cfg: KnnConfig, info, device, run_dir) -> dict:
    seed_everything(cfg.seed, info.rank)
    loaded = build_encoder_from_config(cfg)
    encoder = loaded.model.to(device)
    size, patch = loaded.record.img_size, loaded.record.patch_size
    keep = resolve_tokens(cfg, loaded.record)
    train, val = build_view_datasets(cfg, size, patch, CENTER, CENTER)
    logger = run_dir.start(cfg, keep_log_until=-1)
    kw = feature_options(cfg, device, info, keep)
    ftr, ytr = extract_features(encoder, train, desc="train features", **kw)
    fva, yva = extract_features(encoder, val, desc="val features", **kw)
    metrics = knn_accuracy(ftr, ytr, fva, yva, cfg.k, cfg.temperature, num_classes=len(train.classes))
    logger.log(0, knn_top1=metrics["top1"], knn_top5=metrics["top5"])
    logger.close()
    results = {
        **metrics,
        "k": cfg.k,
        "temperature": cfg.temperature,
        "crop_pct": cfg.crop_pct,
        **(keep.describe() if keep else {"tokens": "all"}),
        "num_train": len(train),
        "num_val": len(val),
        "num_classes": len(train.classes),
    }
    if info.is_main:
        results = write_results(cfg.out, cfg, loaded, results)
    return results
