"""One ``semmae bootstrap`` optimiser step on a held synthetic batch: images per second, median over repeats.

A step = masks + teacher + student (2 global + n local crops) + both losses and centre updates
(``Bootstrapper.forward``) + backward + gradient clipping + AdamW + the teacher's EMA update: what the trainer does
per step without the data loader. The trainer is built from a preset (default ``bootstrap/tiny_cpu``: tiny ViT,
8 x 8 grid at 64 px, 4 local crops, 1024 prototypes, batch 32) on a few generated images; fp32 on the CPU, the preset's
precision elsewhere. Each repeat is one block of ``--steps`` steps; blocks of several processes (e.g. before /
after a change, with ``PYTHONPATH`` pointing at each) can be interleaved by the caller.

    PYTHONPATH=src python benchmarks/bench_bootstrap_step.py [--preset bootstrap/tiny_cpu] [--repeats 5] [--smoke]

``--smoke`` (the test suite's): the preset shrunk by :data:`SMOKE` (one block, 32 px, batch 2, a small head), one
block of one step on the CPU.

The trainer and its step are the library's (:func:`held_trainer`: ``Bootstrapper`` built by ``open_trainer`` on a
few generated images; ``Bootstrapper.step_at``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from _helpers_images import write_images

from semmae_lab.bench import built_trainer
from semmae_lab.timing import step_times


def held_trainer(cfg, device: torch.device, folder: Path):
    """A :class:`~semmae.bootstrap.train.Bootstrapper` built by the library (:func:`semmae_lab.bench.built_trainer`:
    ``build`` and the loop's set-up, nothing copied) on ``cfg.batch_size`` generated images written under
    ``folder``, 100 steps long (one step an epoch, so the schedules span the steps :func:`run` wraps around)."""
    import dataclasses

    from semmae.bootstrap.train import Bootstrapper

    write_images(folder / "data", count=cfg.batch_size, size=cfg.img_size, classes=1)
    cfg = dataclasses.replace(
        cfg,
        data=str(folder / "data"),
        out=str(folder / "run"),
        device=str(device),
        epochs=100,
        accum_iter=1,
        global_batch=None,
        num_workers=0,
        eval_every=0,
        progress=False,
    )
    cfg.validate()
    return built_trainer(Bootstrapper, cfg)


def synthetic_batch(cfg, batch_size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    s, ls = cfg.img_size, cfg.local_size
    views = {
        "global": torch.randn(batch_size, 2, 3, s, s, generator=g),
        "local": torch.randn(batch_size, cfg.local_crops, 3, ls, ls, generator=g),
    }
    return {"image": {k: v.to(device) for k, v in views.items()}}


#: config overrides of ``--smoke``: one block at 32 px, 2 local crops at 16 px, a small head, batch 2
SMOKE = dict(
    depth=1,
    img_size=32,
    local_size=16,
    local_crops=2,
    out_dim=64,
    head_hidden_dim=32,
    head_bottleneck_dim=16,
    batch_size=2,
)


def run(
    preset: str,
    repeats: int,
    steps: int,
    device: str | None,
    threads: int | None,
    overrides: dict | None = None,
) -> dict:
    from semmae.bootstrap.config import BootstrapConfig
    from semmae.config import load_yaml

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    values = {**load_yaml(preset), **(overrides or {})}
    if dev.type == "cpu":
        values["precision"] = "fp32"
    cfg = BootstrapConfig(**values)
    with tempfile.TemporaryDirectory() as tmp:
        t = held_trainer(cfg, dev, Path(tmp))
    batch = synthetic_batch(cfg, cfg.batch_size, dev)

    def step(i: int) -> None:  # the trainer's own step: losses, backward, clip, AdamW, the teacher's EMA
        t.step_at(batch, i % 100)

    step_times(step, 0, dev, warmup=2)
    block_ips = []
    for k in range(repeats):
        (seconds,) = step_times(step, steps, dev, start=2 + k * steps, each=False)
        block_ips.append(steps * cfg.batch_size / seconds)
    return dict(
        preset=preset,
        device=str(dev),
        threads=torch.get_num_threads(),
        batch=cfg.batch_size,
        img_per_s_median=statistics.median(block_ips),
        img_per_s_blocks=[round(v, 2) for v in block_ips],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="bootstrap/tiny_cpu")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks (median reported)")
    ap.add_argument("--steps", type=int, default=3, help="steps per block")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument(
        "--smoke", action="store_true", help="a tiny model, one step on the CPU (the test suite's)"
    )
    a = ap.parse_args()
    if a.smoke:
        a.repeats, a.steps, a.device = 1, 1, "cpu"
    print(json.dumps(run(a.preset, a.repeats, a.steps, a.device, a.threads, SMOKE if a.smoke else None)))


if __name__ == "__main__":
    main()
