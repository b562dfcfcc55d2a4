"""GPU input pipeline: ViT-B/16 at 224 px pretraining img/s from a pack vs JPEG folders (prepared; needs CUDA).

Four numbers, measured side by side in one process on one GPU, same model (``mae_vit_base_patch16``), batch
(128), precision (bf16), masking (random, ratio 0.75) and augmentation (MAE's crop-flip):

1. ``step``: the model step alone on one batch held on the GPU (the ceiling).
2. ``packed``: ``semmae pretrain --data PACK`` end to end (pack at ``--side 256``; batch copy out of the
   memory-mapped shards, crop/flip on the GPU; ``--num-workers auto``).
3. ``jpeg-cpu``: ``semmae pretrain --data FOLDER`` end to end (PIL decode + per-image transforms in
   ``--num-workers auto`` DataLoader workers).
4. ``jpeg-gpu``: the JPEG fast path: DataLoader workers only read the files' bytes; the GPU decodes the batch with
   one batched ``torchvision.io.decode_jpeg(device="cuda")`` call, resizes each image to 256 x 256 and runs the
   same batch crop/flip (:class:`semmae.data.batch_augment.BatchPartAugment`) and model step.

Also reported: pack throughput (img/s, decoding workers = every core but one) and bytes per image of the pack and
of the JPEGs. Without ``--data`` it writes ``--num-images`` synthetic ImageNet-sized JPEGs (500 x 375, smooth
shapes, quality 90) to measure on; pass an ImageNet-style folder for real photos. Writes
``gpu-input-pipeline-<gpu>.json`` under ``$OUT`` when it is set (a remote GPU run returns only that folder), else
under ``benchmarks/results/``. Needs no webdataset (packs are written and read with the standard library's tar).

    python benchmarks/gpu_input_pipeline.py [--data DIR] [--num-images 3072] [--steps 30]

Budget: about 6-8 minutes on one H100/H200 with the defaults (most of it making and packing the JPEGs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pretrain import _config, e2e_throughput, step_throughput  # noqa: E402

from semmae.engine.pretrain import Pretrainer  # noqa: E402


def _write_jpeg(job: tuple[str, int]) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    path, seed = job
    rng = np.random.default_rng(seed)
    w, h = 500, 375
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * rng.uniform(0.2, 0.5), yy * rng.uniform(0.2, 0.6), (xx + yy) * 0.2], -1)
    img = Image.fromarray(np.clip(base + rng.uniform(0, 80, 3), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        draw.ellipse(
            [x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)],
            fill=tuple(int(c) for c in rng.integers(0, 255, 3)),
        )
    img.filter(ImageFilter.GaussianBlur(1)).save(path, quality=90)


def make_jpegs(root: Path, n: int, classes: int = 10) -> Path:
    import multiprocessing as mp

    jobs = []
    for i in range(n):
        d = root / f"c{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        jobs.append((str(d / f"{i:06d}.jpg"), i))
    with mp.get_context("fork").Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
        pool.map(_write_jpeg, jobs, chunksize=32)
    return root


def _cfg(data: Path, out: str, steps: int, **kw):
    return _config(
        data,
        out,
        steps,
        "cuda",
        "mae_vit_base_patch16",
        224,
        masking="random",
        batch_size=128,
        num_workers="auto",
        log_every=5,
        **kw,
    )


def run_e2e(data: Path, steps: int) -> tuple[Pretrainer, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _cfg(data, tmp, steps)
        trainer = Pretrainer(cfg)
        trainer.run()
        return trainer, e2e_throughput(Path(tmp), cfg.batch_size)


class _RawFiles(torch.utils.data.Dataset):
    """File bytes of an ImageFolder (what the GPU decoder needs), read in DataLoader workers."""

    def __init__(self, root: Path):
        from semmae.data.folder import scan_image_folder

        _, self.samples = scan_image_folder(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):  # bytes, not tensors: a batch of many small tensors would cost a file
        return Path(self.samples[i][0]).read_bytes(), self.samples[i][1]  # descriptor each between processes


def run_jpeg_gpu(trainer: Pretrainer, data: Path, steps: int, side: int = 256, warmup: int = 5) -> float:
    """img/s of the GPU-decode fast path feeding ``trainer``'s model step (same model, optimiser, masking)."""
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    from semmae.data.batch_augment import BatchPartAugment
    from semmae.data.workers import auto_worker_plan

    dev = trainer.device
    ds = _RawFiles(data)
    workers = max(1, auto_worker_plan(True, "cuda").count)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=trainer.cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=lambda items: ([b for b, _ in items], torch.tensor([y for _, y in items])),
        persistent_workers=True,
        prefetch_factor=4,
        drop_last=True,
    )
    aug = BatchPartAugment(
        trainer.cfg.img_size, trainer.patch_size, side, scale=tuple(trainer.cfg.crop_scale)
    )
    gen = torch.Generator().manual_seed(0)
    times: list[float] = []
    it = iter(loader)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            raw, _ = next(it)
        except StopIteration:
            it = iter(loader)
            raw, _ = next(it)
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
        decoded = decode_jpeg(data, device=dev)  # one batched nvJPEG call
        sizes = torch.tensor([[d.shape[1], d.shape[2]] for d in decoded])
        pixels = torch.stack(
            [
                F.interpolate(d[None].float(), size=(side, side), mode="bilinear", antialias=True)[0]
                for d in decoded
            ]
        )
        pixels = pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        batch = aug({"pixels": pixels, "size": sizes}, gen)
        trainer.step_at(batch, i)  # draws, masks, the MAE under the run's precision, backward, AdamW
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return trainer.cfg.batch_size / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="JPEG ImageFolder (default: synthetic 500x375 JPEGs)")
    ap.add_argument("--num-images", type=int, default=3072)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--side", type=int, default=256, help="pack side (crop-flip: a bit above 224)")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    from semmae.data.packed import pack_dataset

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = Path(args.data) if args.data else make_jpegs(Path(tmp) / "jpeg", args.num_images)
        print(f"data ready in {time.perf_counter() - t0:.0f} s", flush=True)
        workers = max(0, (len(os.sched_getaffinity(0))) - 1)
        report = pack_dataset(data, Path(tmp) / "pack", args.side, workers=workers, progress=False)
        jpeg_bytes = sum(p.stat().st_size for p in data.rglob("*.jpg")) / report.num_images
        rows += [
            {
                "name": f"pack throughput ({workers} workers)",
                "value": report.num_images / report.seconds,
                "unit": "img/s",
            },
            {"name": f"pack bytes/image ({args.side} px)", "value": report.bytes_per_image, "unit": "B"},
            {"name": "JPEG bytes/image", "value": jpeg_bytes, "unit": "B"},
        ]
        print(report.format(), flush=True)

        packed, e2e_packed = run_e2e(Path(tmp) / "pack", args.steps)
        step = step_throughput(packed, steps=args.steps, warmup=5)
        rows.append({"name": "ViT-B/16 224 bf16 model step alone", "value": step, "unit": "img/s"})
        rows.append(
            {"name": f"e2e packed ({packed.num_workers} workers)", "value": e2e_packed, "unit": "img/s"}
        )
        gpu_jpeg = run_jpeg_gpu(packed, data, args.steps)
        rows.append({"name": "e2e JPEG, batched decode_jpeg(cuda)", "value": gpu_jpeg, "unit": "img/s"})
        del packed
        folder, e2e_folder = run_e2e(data, args.steps)
        rows.append(
            {"name": f"e2e JPEG, PIL in {folder.num_workers} workers", "value": e2e_folder, "unit": "img/s"}
        )
        for name, v in (
            ("packed", e2e_packed),
            ("JPEG decode_jpeg(cuda)", gpu_jpeg),
            ("JPEG PIL workers", e2e_folder),
        ):
            rows.append({"name": f"{name} / model step", "value": v / step, "unit": "x"})
    for r in rows:
        print(f"{r['name']:<50} {r['value']:>10.3g} {r['unit']}")
    name = torch.cuda.get_device_name(0).replace(" ", "_")
    # a remote GPU run hands back only what is under $OUT
    out = (
        Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results"
    ) / f"gpu-input-pipeline-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"device": torch.cuda.get_device_name(0), "cpus": os.cpu_count(), "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
