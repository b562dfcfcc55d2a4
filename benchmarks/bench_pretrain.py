"""`semmae pretrain` end to end (data loading included) vs the model step alone on in-memory tensors.

CPU (default): a small MAE (ViT-Tiny width, 6 blocks, patch 8) at 96 px on Imagenette-96 with 2 DataLoader
workers. ``e2e`` is measured from the run's own ``log.jsonl`` timestamps after a warm-up (so worker start-up is
excluded); ``step`` runs the same model, optimiser, precision and masking on one batch held in memory. Target:
e2e / step >= 0.9 (the input pipeline keeps up). Peak memory is the process's max RSS (CPU) or the CUDA
allocator's peak.

GPU (``--device cuda``): ViT-B/16 at 224 px, bf16, random vs adaptive masking, with and without
``torch.compile`` (model step on in-memory tensors; synthetic part ids for the adaptive strategy). Results are
written to ``benchmarks/results/pretrain-<device>.json``.

    python benchmarks/bench_pretrain.py [--quick] [--device cuda] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from semmae.engine.config import PretrainConfig
from semmae.engine.pretrain import Pretrainer, _memory_mb
from semmae.utils.rundir import read_log

DATA = Path("/work/shared/data/imagenette2_96/train")
RESULTS = Path(__file__).resolve().parent / "results"


def _config(
    data: Path, out: str, steps: int, device: str, model: str, img_size: int, masking: str = "random", **kw
) -> PretrainConfig:
    base = dict(
        data=str(data),
        out=out,
        model=model,
        img_size=img_size,
        masking=masking,
        epochs=100,
        warmup_epochs=1,
        batch_size=64,
        num_workers=2,
        precision="fp32" if device == "cpu" else "bf16",
        device=device,
        max_steps=steps,
        log_every=5,
        vis_every=0,
        ckpt_every=0,
        progress=False,
        keep_last=1,
    )
    base.update(kw)
    cfg = PretrainConfig(**base)
    cfg.validate()
    return cfg


def step_throughput(trainer: Pretrainer, steps: int, warmup: int = 3, part_ids: bool = False) -> float:
    """Images/s of mask + forward + backward + optimiser step on one in-memory batch (median over steps)."""
    batch = next(iter(trainer.loader))
    if part_ids:
        g = (trainer.cfg.img_size // trainer.patch_size) ** 2
        batch["part_ids"] = torch.randint(0, 6, (batch["image"].shape[0], g))
        trainer.no_part_id = 6
    model, opt, scaler = trainer.model, trainer.optimizer, trainer.scaler
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        imgs, mask, keep, _ = trainer._masks(batch, i, 0)
        with trainer.precision.autocast():
            loss = model(imgs, mask, keep_index=keep)["loss"]
        scaler(loss, opt, trainer.model_core.parameters)
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return imgs.shape[0] / statistics.median(times)


def loader_throughput(trainer: Pretrainer, batches: int) -> float:
    """Images/s of the DataLoader alone (decode + joint transforms + collate), after its first batch."""
    it = iter(trainer.loader)
    next(it)
    t0 = time.perf_counter()
    n = sum(next(it)["image"].shape[0] for _ in range(batches))
    return n / (time.perf_counter() - t0)


def e2e_throughput(out: Path, batch: int, skip_logs: int = 1) -> float:
    """Images/s between the first logged step after warm-up and the last one (from log.jsonl timestamps)."""
    log = [r for r in read_log(out / "log.jsonl") if "loss" in r][skip_logs:]
    steps = log[-1]["step"] - log[0]["step"]
    return steps * batch / (log[-1]["time"] - log[0]["time"])


def run_cpu(quick: bool, data: Path) -> list[dict]:
    steps = 15 if quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(
            data,
            tmp,
            steps,
            "cpu",
            "mae_vit_tiny_patch8",
            96,
            depth=6,
            decoder_depth=2,
            batch_size=32,
            log_every=3,
        )
        trainer = Pretrainer(cfg)
        trainer.run()
        e2e = e2e_throughput(Path(tmp), cfg.batch_size)
        step = step_throughput(trainer, steps=8 if quick else 20)
        mem = _memory_mb(trainer.device)
        data_only = loader_throughput(trainer, 10 if quick else 30)
    return [
        {
            "name": "pretrain e2e (2 workers, 96px, tiny/8 d6, fp32)",
            "value": round(e2e, 1),
            "unit": "img/s",
            "target": "",
        },
        {
            "name": "pretrain model step alone (in-memory)",
            "value": round(step, 1),
            "unit": "img/s",
            "target": "",
        },
        {
            "name": "data pipeline alone (2 workers)",
            "value": round(data_only, 1),
            "unit": "img/s",
            "target": "",
        },
        {
            "name": "pretrain e2e / model step",
            "value": round(e2e / step, 3),
            "unit": "x",
            "target": ">= 0.9x",
        },
        {"name": "pretrain peak memory (max RSS)", "value": round(mem, 0), "unit": "MiB", "target": ""},
    ]


def run_gpu(quick: bool, data: Path) -> list[dict]:
    rows = []
    steps = 10 if quick else 30
    for masking in ("random", "adaptive"):
        for compile_ in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                # built with random masking (no part cache needed); the strategy is swapped below
                cfg = _config(
                    data,
                    tmp,
                    1,
                    "cuda",
                    "mae_vit_base_patch16",
                    224,
                    compile=compile_,
                    batch_size=128,
                    num_workers=8,
                )
                trainer = Pretrainer(cfg)
                if masking != "random":
                    from semmae.masking import build_masking

                    trainer.strategy = build_masking(masking, mask_ratio=cfg.mask_ratio, gamma=cfg.gamma)
                torch.cuda.reset_peak_memory_stats()
                ips = step_throughput(trainer, steps, warmup=5, part_ids=masking != "random")
                rows.append(
                    {
                        "name": f"ViT-B/16 224 bf16 {masking}{' compile' if compile_ else ''}",
                        "value": round(ips, 1),
                        "unit": "img/s",
                        "target": "",
                    }
                )
                rows.append(
                    {
                        "name": f"ViT-B/16 224 bf16 {masking}{' compile' if compile_ else ''} peak memory",
                        "value": round(_memory_mb(trainer.device), 0),
                        "unit": "MiB",
                        "target": "",
                    }
                )
    return rows


def run(quick: bool = False, device: str | None = None, data: str | None = None) -> list[dict]:
    device = device or "cpu"
    data_path = Path(data) if data else DATA
    return run_gpu(quick, data_path) if device == "cuda" else run_cpu(quick, data_path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--data", default=None, help=f"ImageFolder of training images (default {DATA})")
    args = ap.parse_args()
    rows = run(args.quick, args.device, args.data)
    for r in rows:
        print(f"{r['name']:<55} {r['value']:>10} {r['unit']:<6} {r['target']}")
    if args.device == "cuda":
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"pretrain-{torch.cuda.get_device_name(0).replace(' ', '_')}.json").write_text(
            json.dumps({"device": torch.cuda.get_device_name(0), "rows": rows}, indent=2) + "\n"
        )
