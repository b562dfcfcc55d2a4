"""Part-learning benchmark (paper Sec. 3.1 pipeline): export throughput vs the frozen encoder alone, part-train
step time, and part-cache bytes per image. ``run(quick)`` returns ``[{name, value, unit, target}]``.

Export = encoder forward (+ last-block CLS attention) + part maps (Eq. 1-2) + resize/argmax + foreground score +
packing into the cache, on the same in-memory batch as the encoder-only forward (data loading excluded from both),
so the ratio isolates what part export adds to the forward pass. Target: >= 0.8x.

``--smoke`` (the test suite's): ViT-Tiny/16 at 32 px, batch 2, one timed call of each, on the CPU.

The part-train steps are the library's: each is a ``PartTrainer`` (``semmae parts train``) built by
``open_trainer`` from the verb's config on a few generated images (:func:`part_trainer`), and one step is its
``step_at`` on a held batch of its own first epoch (the learning rate of the step, the forward under the run's
precision - fp32 on the CPU, ``auto`` on a GPU - Eq. 7, backward, clipping, AdamW; data loading excluded). A
``--features online`` batch comes with the encoder already run, so its step first runs the frozen encoder on the
batch's images (``OnlineBatches.encode``), as every step of that mode does. ``parts/train_step`` is that online
step for the export's encoder (6 parts, the config's default head); ``parts/step_*`` are the demo's step with the
paper preset's decoder (``parts/ibot_vits16``) online and cached, and with ``parts/tiny_cpu``'s light decoder
cached.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _helpers_images import write_images

from semmae.data.part_cache import PartCache
from semmae.engine.precision import resolve_precision
from semmae.parts.encoder import FrozenEncoderSpec, build_encoder
from semmae.parts.inference import infer_parts
from semmae.parts.model import PartHeadSpec, PartModel
from semmae_lab.bench import built_trainer
from semmae_lab.results_table import row
from semmae_lab.timing import mean_time as _timeit


def run(quick: bool = True, smoke: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    arch, img, batch, iters = (
        ("vit_tiny_patch16_224", 32, 2, 1)
        if smoke
        else ("vit_tiny_patch16_224", 64, 16, 3)
        if quick
        else ("vit_small_patch16_224", 224, 64 if device.type == "cuda" else 16, 10)
    )
    torch.manual_seed(0)
    encoder = build_encoder(FrozenEncoderSpec(arch=arch, img_size=img)).to(device)
    spec = PartHeadSpec(embed_dim=encoder.embed_dim, grid_size=encoder.grid_size, img_size=img, num_parts=6)
    model = PartModel(spec).to(device)
    images = torch.randn(batch, 3, img, img, device=device)
    grid = 2 * encoder.grid_size  # the patch-8 MAE grid for a patch-16 part encoder (28 at 224 px)
    amp = device.type == "cuda"

    def encoder_only():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            encoder.vit.forward_features(images)

    t_enc = _timeit(encoder_only, iters, device)
    with tempfile.TemporaryDirectory() as tmp:
        n_total = batch * (iters + 1)
        writer = PartCache.create(f"{tmp}/bench.parts", [f"{i}.png" for i in range(n_total)], grid, 6)

        def export_step():
            res = infer_parts(encoder, model.eval(), images, grid, resolve_precision("auto", device))
            writer.write(writer.next_index, res["part_ids"].to(torch.uint8).cpu(), res["fg"].cpu())

        t_exp = _timeit(export_step, iters, device)
        cache = writer.finalize()
        bytes_per_image = cache.bytes_per_image

    with tempfile.TemporaryDirectory() as tmp:
        online = dict(encoder=arch, img_size=img, num_parts=6, batch_size=batch, features="online")
        trainer, held = part_trainer(Path(tmp), device, None, **online)
    t_train = _timeit(trainer_step(trainer, held), iters, device)
    rows = step_comparison(device, iters, 2 if smoke else 64)
    enc_ips, exp_ips = batch / t_enc, batch / t_exp
    tag = f"{arch}@{img} b{batch} {device.type}"
    return [
        row(f"parts/encoder_forward ({tag})", enc_ips, "images/s"),
        row(f"parts/export ({tag}, grid {grid})", exp_ips, "images/s"),
        row("parts/export_vs_encoder", exp_ips / enc_ips, "x", ">= 0.8"),
        row(f"parts/train_step ({tag})", t_train * 1000, "ms"),
        row(f"parts/cache_bytes_per_image (grid {grid})", bytes_per_image, "bytes"),
        *rows,
    ]


def part_trainer(folder: Path, device: torch.device, preset: str | None, **values: Any):
    """A :class:`~semmae.parts.train.PartTrainer` built by the library (:func:`semmae_lab.bench.built_trainer` over
    ``open_trainer``: the preflight, the run folder claimed, ``setup()``: seeding, ``build()``, the loop's set-up;
    nothing copied) from
    ``semmae parts train``'s config (``preset`` <- ``values``, as ``--config`` and flags), on ``batch_size`` generated
    images written under ``folder``; and its first batch (what :meth:`PartTrainer.forward` takes:
    ``(images, F_c, F)``; with ``--features online``, the encoder already run). The run's folder is closed once
    built: the steps are timed outside a run."""
    from semmae.cli import stage_config
    from semmae.parts.train import PartTrainer

    n = values["batch_size"]
    write_images(folder / "data", count=n, size=values["img_size"], classes=1)
    cfg = stage_config(
        "parts train",
        preset,
        **values,
        data=str(folder / "data"),
        out=str(folder / "run"),
        device=str(device),
        epochs=100,  # one step an epoch: the schedule spans the steps trainer_step wraps around
        diag_images=n,
        num_workers=0,
        logger="none",
    )
    trainer = built_trainer(PartTrainer, cfg)
    return trainer, next(iter(trainer.epoch_batches(0, 0, None)))


def trainer_step(trainer, batch) -> Callable[[], Any]:
    """One of ``trainer``'s optimiser steps on the held ``batch`` (``Trainer.step_at``: the learning rate of the
    step, the forward under the run's precision, Eq. 7, backward, clipping, AdamW, the non-finite watch). With
    ``--features online`` the step first runs the frozen encoder on the batch's images
    (``OnlineBatches.encode``), as every step of that mode does."""
    steps = itertools.count()
    if trainer.cfg.features == "online":
        images = batch[0]
        return lambda: trainer.step_at(trainer.batches.encode(images), next(steps))
    return lambda: trainer.step_at(batch, next(steps))


def step_comparison(device: torch.device, iters: int, batch: int = 64) -> list[dict]:
    """The demo's part step (tiny ViT width 192, depth 6, patch 8 at 64 px, batch 64, 4 parts, blur 3, softmax
    over parts) three ways, side by side, each the step of a ``PartTrainer``: the encoder run every step
    (``--features online``) with the decoder of the paper preset ``parts/ibot_vits16`` (width 256; the old demo
    recipe), tokens from the feature cache (``--features cached``) with the same decoder, and cached tokens with
    the light decoder of ``parts/tiny_cpu`` (width 64, projections 64, cosine Eq. 2)."""
    demo = dict(
        encoder="vit_d192x6h3_patch8",
        img_size=64,
        num_parts=4,
        blur_kernel=3,
        softmax_over="parts",
        batch_size=batch,
    )
    variants = {
        "online_d256": ("parts/ibot_vits16", "online"),
        "cached_d256": ("parts/ibot_vits16", "cached"),
        "cached_d64": ("parts/tiny_cpu", "cached"),
    }
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (preset, features) in variants.items():
            trainer, held = part_trainer(Path(tmp) / name, device, preset, features=features, **demo)
            steps[name] = trainer_step(trainer, held)
    t = {name: _timeit(step, iters, device) for name, step in steps.items()}
    tag = f"demo shape b{batch} {device.type}"
    return [row(f"parts/step_{k} ({tag})", v * 1000, "ms") for k, v in t.items()] + [
        row("parts/step_speedup_cached_d64_vs_online_d256", t["online_d256"] / t["cached_d64"], "x"),
        row("parts/step_speedup_cached_vs_online (same decoder)", t["online_d256"] / t["cached_d256"], "x"),
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--full", action="store_true", help="ViT-S/16 at 224 px instead of the quick tiny setting"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite's)")
    args = ap.parse_args()
    for row in run(quick=not args.full, smoke=args.smoke):
        print(json.dumps(row))
