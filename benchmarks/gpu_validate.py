"""One prepared GPU validation run: what the CPU test suite cannot check, in at most 8 minutes on one H100/H200.

Sections (each one is timed, fails alone, and is skipped once the time budget is spent):

1. ``env``: torch / CUDA / GPU, native bf16, TF32, timm's fused attention, and which SDPA backends run (flash
   attention at head dim 64 in bf16 is the one ViT-B uses).
2. ``masking``: adaptive (Algorithm 1) vs random mask of a batch on the device, drawn up front then built with
   ``torch.cuda.set_sync_debug_mode("error")`` on (a host sync raises).
3. ``augment``: the packed crop-flip of a batch of 256 noise images (256 -> 224 px), one ``interpolate`` per box
   vs the batched resample: time, the largest difference with float32 matmuls exact and in TF32, host syncs.
4. ``held``: ViT-B/16, 224 px, batch 256, bf16 - the pretrain step (masks + forward + backward + AdamW) on one
   batch held on the GPU, random vs adaptive masking; the same step's forward under the sync-debug mode; ViT-L/16
   next to facebookresearch/mae's published pretraining time (see ``MAE_PUBLISHED``).
5. ``e2e``: ``semmae pretrain`` end to end from a JPEG folder (generated here) and from a pack of it with part cells
   (adaptive masking), img/s from the runs' own logs, against the held step; the pack's img/s and bytes per image.
   ``jpeg_gpu``: the JPEG fast path: loader workers read only the files' bytes, the GPU decodes each batch with
   one batched ``torchvision.io.decode_jpeg(device="cuda")`` call, resizes it to the pack side and runs the pack's
   batch crop-flip; img/s against the held step (formerly ``benchmarks/gpu_input_pipeline.py``).
6. ``resume``: a run stopped at step 4 and continued with ``--resume auto`` logs steps 1..8 once each (no gap).
7. ``b8``: ViT-B/8 with the most-foreground quarter of its 28x28 patches (``--fg-keep 0.25``), vs ViT-B/16.
8. ``fp16``: fp16 + grad scaler + accumulation 2 + clipping 1.0 trains with finite losses and a saved loss scale.
9. ``compiled``: the held step with ``--compile`` vs eager.
10. ``profile``: ``torch.profiler`` over held steps: attention kernels, host syncs per step, top CUDA kernels.

Targets are printed beside each figure: adaptive / random step >= 0.97, packed e2e >= 0.9 of the held step,
compiled >= eager, B/8 keep-1/4 step within 10 % of B/16, the batched crop at least as fast as the per-box one
and within 1 uint8 level of it. Everything it reports goes under ``$OUT`` (or ``--out``): ``gpu-validate.json``,
``gpu-validate.md``, ``profile.txt``; scratch (images, pack, checkpoints) lives in a temporary folder that is
deleted. Needs torch, torchvision and timm (and this repository's ``src`` on the path); the runs log to
``log.jsonl`` only (``--logger none``).

    OUT=/tmp/out PYTHONPATH=src python benchmarks/gpu_validate.py            # on the GPU box
    PYTHONPATH=src python benchmarks/gpu_validate.py --smoke --out /tmp/v    # tiny sizes, on the CPU (a test)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from semmae.engine.bench import bench_config, bench_trainer, held_batch, held_step_rate
from semmae.utils.results_table import cell, markdown_table
from semmae.utils.timing import logged, step_times, synchronize

# facebookresearch/mae, PRETRAIN.md: ViT-Large (mae_vit_large_patch16, mask 0.75, effective batch 4096, fp16 AMP),
# 800 epochs of ImageNet-1k (1,281,167 images) in "~42h in 64 V100 GPUs" -> about 106 img/s per V100. Its README
# and PRETRAIN.md publish no ViT-Base throughput; the ViT-B/16 figures here have no published counterpart.
MAE_PUBLISHED = {
    "source": "github.com/facebookresearch/mae PRETRAIN.md: ViT-L/16, 800 epochs, ~42 h on 64 V100",
    "vit_l16_img_s_per_v100": 1_281_167 * 800 / (42 * 3600) / 64,
}


class Report:
    """Rows ``{section, name, value, unit, target, ok}``; written as JSON and markdown after every section."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.rows = out, meta, []

    def add(
        self, section: str, name: str, value: Any, unit: str = "", target: str = "", ok: bool | None = None
    ):
        self.rows.append(dict(section=section, name=name, value=value, unit=unit, target=target, ok=ok))
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(
            f"[{section}] {name}: {cell(value)} {unit}{f'   (target {target})' if target else ''}{mark}",
            flush=True,
        )

    def write(self) -> None:
        (self.out / "gpu-validate.json").write_text(json.dumps({**self.meta, "rows": self.rows}, indent=2))
        met = {None: "", True: "yes", False: "**no**"}
        rows = [
            [r["section"], r["name"], r["value"], r["unit"], r["target"], met[r["ok"]]] for r in self.rows
        ]
        table = markdown_table(["section", "figure", "value", "unit", "target", "met"], rows)
        head = "\n".join(f"- {k}: {v}" for k, v in self.meta.items() if not isinstance(v, dict))
        (self.out / "gpu-validate.md").write_text(f"# gpu_validate\n\n{head}\n\n{table}\n")


class Sizes:
    """The run's sizes: the real ones on a GPU, tiny ones with ``--smoke``."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.device = "cpu" if smoke else "cuda"
        self.b16 = "mae_vit_micro_patch8" if smoke else "mae_vit_base_patch16"
        self.b8 = "mae_vit_micro_patch4" if smoke else "mae_vit_base_patch8"
        self.large = "mae_vit_micro_patch8" if smoke else "mae_vit_large_patch16"
        self.img = 32 if smoke else 224
        self.batch = 4 if smoke else 256
        self.large_batch = 4 if smoke else 128
        self.images = 24 if smoke else 3072
        self.image_side = 48 if smoke else 400
        self.pack_side = 40 if smoke else 256
        self.held_steps, self.warmup = (2, 1) if smoke else (20, 5)
        self.e2e_steps = 3 if smoke else 60
        self.precision = "fp32" if smoke else "bf16"
        self.fp16 = "bf16" if smoke else "fp16"  # fp16 needs CUDA; the smoke run takes the same road in bf16


def _config(s: Sizes, folder: Path, out: Path, **kw):
    """The quiet measured run (:func:`semmae.engine.bench.bench_config`) at the run's sizes; ``kw`` override."""
    workers = "0" if s.smoke else "auto"
    base = dict(batch_size=s.batch, num_workers=workers, log_every=1 if s.smoke else 5, epochs=1000, seed=0)
    data, model = kw.pop("data", folder), kw.pop("model", s.b16)
    return bench_config(data, out, model, s.img, s.device, **{**base, **kw})


def check_no_host_sync(rep: Report, section: str, name: str, fn) -> None:
    """Run ``fn`` once under ``torch.cuda.set_sync_debug_mode("error")`` (a host sync raises) and report it."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        rep.add(section, name, 0, target="0", ok=True)
    except RuntimeError as e:
        rep.add(section, name, f"raised: {str(e)[:80]}", target="0", ok=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------------------------- data
def make_data(s: Sizes, root: Path) -> dict[str, Path]:
    """JPEGs, part caches on the 16- and 8-pixel patch grids, and a pack (with the patch-16 cells)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _helpers_images import write_images

    from semmae.data.folder import ImageFolderDataset
    from semmae.data.packed import pack_dataset
    from semmae.data.part_cache import PartCache

    folder = write_images(root / "jpeg", count=s.images, size=s.image_side, classes=4)
    files = ImageFolderDataset(folder).relative_paths
    out = {"folder": folder}
    g = torch.Generator().manual_seed(0)
    for name, patch in (("parts16", 16 if not s.smoke else 8), ("parts8", 8 if not s.smoke else 4)):
        grid = s.img // patch
        writer = PartCache.create(root / f"{name}.cache", files, grid=grid, num_parts=6, root=folder)
        blobs = torch.rand(len(files), 1, 4, 4, generator=g)  # smooth "parts" and foreground
        big = torch.nn.functional.interpolate(blobs, size=(grid, grid), mode="bilinear")[:, 0]
        writer.write(0, (big * 7).floor().clamp(max=6).long(), big)
        out[name] = writer.finalize().path
    out["pack"] = root / "pack"
    workers = 0 if s.smoke else max(1, (os.cpu_count() or 2) - 1)
    out["pack_report"] = pack_dataset(
        folder, out["pack"], s.pack_side, parts=out["parts16"], workers=workers, progress=False
    )
    return out


# -------------------------------------------------------------------------------------------- sections
def section_env(s: Sizes, rep: Report) -> None:
    import timm
    import torchvision

    env = functools.partial(rep.add, "env")
    env("torch / torchvision / timm", f"{torch.__version__} / {torchvision.__version__} / {timm.__version__}")
    env("python / cpus", f"{platform.python_version()} / {os.cpu_count()}")
    from timm.layers import use_fused_attn

    env(
        "timm fused attention (F.scaled_dot_product_attention)",
        bool(use_fused_attn()),
        ok=bool(use_fused_attn()),
    )
    if s.smoke:
        env("device", "cpu (smoke run)")
        return
    from semmae.engine.precision import native_bf16, resolve_precision

    dev = torch.device("cuda")
    env(
        "GPU",
        f"{torch.cuda.get_device_name(0)} (sm {'.'.join(map(str, torch.cuda.get_device_capability(0)))})",
    )
    env("CUDA / cuDNN", f"{torch.version.cuda} / {torch.backends.cudnn.version()}")
    env("native bf16", native_bf16(dev), ok=native_bf16(dev))
    env("--precision auto resolves to", resolve_precision("auto", dev).name, target="bf16")
    env("float32 matmul precision after auto", torch.get_float32_matmul_precision(), target="high (TF32)")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(8, 12, 197, 64, device=dev, dtype=torch.bfloat16)
    for name, backend in (
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("mem-efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("cuDNN", getattr(SDPBackend, "CUDNN_ATTENTION", None)),
    ):
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            torch.cuda.synchronize()
            env(
                f"SDPA {name} backend (bf16, 197 tokens, head dim 64)",
                True,
                ok=True if name == "flash" else None,
            )
        except RuntimeError as e:
            env(
                f"SDPA {name} backend",
                f"unavailable: {str(e).splitlines()[0][:80]}",
                ok=False if name == "flash" else None,
            )


def section_masking(s: Sizes, rep: Report) -> None:
    from semmae.masking import build_masking

    dev = torch.device(s.device)
    b, grid = s.batch, (s.img // 16, s.img // 16) if not s.smoke else (4, 4)
    length = grid[0] * grid[1]
    g = torch.Generator(device=dev).manual_seed(0)
    part_ids = torch.randint(0, 7, (b, length), device=dev, generator=g)
    times = {}
    for name in ("random", "adaptive"):
        strategy = build_masking(name)

        def once(i: int, strategy=strategy) -> torch.Tensor:
            draws = strategy.draw(b, grid, 0.5, g, dev, num_groups=7)
            return strategy(b, grid, 0.5, None, part_ids=part_ids, device=dev, no_part_id=6, draws=draws)

        n = 5 if s.smoke else 50
        times[name] = step_times(once, n, dev, warmup=3, each=False)[0] / n
        mask = once(0)
        exact = bool((mask.sum(1) == round(0.75 * length)).all())
        rep.add("masking", f"{name} mask of {b} x {length}", times[name] * 1e3, "ms", ok=exact)
        if dev.type == "cuda":
            check_no_host_sync(rep, "masking", f"{name}: host syncs while masking", lambda: once(0))


def section_augment(s: Sizes, rep: Report) -> None:
    """The packed crop-flip of a batch: one ``interpolate`` per box (the old path) vs the batched resample."""
    from semmae.data.batch_augment import BatchPartAugment
    from semmae.data.transforms import IMAGENET_STD

    dev, b, side = torch.device(s.device), s.batch, s.pack_side
    g = torch.Generator().manual_seed(0)
    batch = {  # noise images: the worst case for a difference between the two resamples
        "pixels": torch.randint(0, 256, (b, side, side, 3), dtype=torch.uint8, generator=g).to(dev),
        "codes": torch.randint(0, 256, (b, s.img // 16, s.img // 16), dtype=torch.uint8, generator=g).to(dev),
        "size": torch.tensor([[375, 500]] * b),
    }
    augs = {
        name: BatchPartAugment(s.img, 16, side, scale=(0.2, 1.0), num_parts=6, batched=batched)
        for name, batched in (("one interpolate per box", False), ("batched resample", True))
    }
    times = {}
    for name, aug in augs.items():
        n = 3 if s.smoke else 20
        crop = lambda i, aug=aug: aug(batch, torch.Generator().manual_seed(i))  # noqa: E731
        times[name] = step_times(crop, n, dev, warmup=1, each=False)[0] / n
        rep.add("augment", f"crop-flip of {b} x {side} px -> {s.img}, {name}", times[name] * 1e3, "ms")
    old, new = times.values()
    rep.add(
        "augment",
        "per box / batched time",
        old / new,
        "x",
        target=">= 1",
        ok=old >= new if not s.smoke else None,
    )
    # in uint8 levels, with float32 matmuls exact and in TF32 (what --precision auto/fp32 allow on CUDA)
    to_levels = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1) * 255
    ref = augs["one interpolate per box"](batch, torch.Generator().manual_seed(1))["image"]
    before = torch.get_float32_matmul_precision()
    for precision in ("highest", "high"):
        torch.set_float32_matmul_precision(precision)
        out = augs["batched resample"](batch, torch.Generator().manual_seed(1))["image"]
        levels = ((out - ref) * to_levels).abs().max().item()
        ok = levels < 1 if not s.smoke else None  # the CPU's per-box path is the uint8 kernel: not comparable
        rep.add(
            "augment", f"largest difference, matmul precision {precision}", levels, "uint8 levels", "< 1", ok
        )
    torch.set_float32_matmul_precision(before)
    if dev.type == "cuda":
        aug = augs["batched resample"]
        check_no_host_sync(rep, "augment", "host syncs in the batched crop-flip", lambda: aug(batch, g))


def _held(trainer, steps: int, warmup: int, parts: bool) -> float:
    """img/s of the pretrain step on one batch held on the device (masks, forward, backward, AdamW); the batch is
    kept as ``trainer.held`` for the sections that step on it again."""
    trainer.held = held_batch(trainer, synthetic_parts=parts, seed=1)
    return held_step_rate(trainer, trainer.held, steps, warmup)


def section_held(s: Sizes, rep: Report, data: dict, scratch: Path, results: dict) -> None:
    rates = {}
    for masking in ("random", "adaptive"):
        trainer = bench_trainer(
            _config(s, data["folder"], scratch / f"held-{masking}", num_workers="0"), masking
        )
        rates[masking] = _held(trainer, s.held_steps, s.warmup, parts=masking != "random")
        rep.add(
            "held", f"{s.b16} {s.img}px b{s.batch} {s.precision} {masking}: step", rates[masking], "img/s"
        )
        if masking == "adaptive":
            results["trainer"] = trainer
    ratio = rates["adaptive"] / rates["random"]
    rep.add("held", "adaptive / random step", ratio, target=">= 0.97", ok=ratio >= 0.97)
    results["held"] = rates
    trainer = results["trainer"]
    if s.device == "cuda":  # the step's forward (draws, masks, MAE) must not wait for the GPU
        batch = trainer.held
        draws = trainer.draws(batch["image"].shape[0], 99, 0)
        check_no_host_sync(
            rep,
            "held",
            "host syncs in the step's forward (adaptive)",
            lambda: trainer.forward_step(batch["image"], batch["part_ids"], batch["fg"], draws),
        )
    large = bench_trainer(
        _config(
            s,
            data["folder"],
            scratch / "held-large",
            model=s.large,
            batch_size=s.large_batch,
            num_workers="0",
        )
    )
    rate = _held(large, s.held_steps // 2 or 1, s.warmup, parts=False)
    pub = MAE_PUBLISHED["vit_l16_img_s_per_v100"]
    rep.add("held", f"{s.large} b{s.large_batch} {s.precision} random: step", rate, "img/s")
    rep.add(
        "held",
        f"  vs MAE's published ViT-L/16 rate per V100 ({MAE_PUBLISHED['source']})",
        rate / pub,
        "x",
        target=f"{pub:.0f} img/s per V100",
    )
    del large


def _e2e(cfg) -> float:
    """img/s of a whole ``semmae pretrain`` run, from its own log (first record = warm-up, dropped)."""
    return _e2e_windows(cfg)["all"]


def _e2e_windows(cfg) -> dict[str, float]:
    """Run ``semmae pretrain`` and read its log windows: ``all`` (median img/s of every window after the first),
    ``steady`` (median over windows inside one epoch: no loader restart or refill at an epoch start in them),
    ``epoch_start`` (median over the windows that hold an epoch start) and ``data_wait`` (median share of a steady
    window the step spent waiting for a batch). The benchmark's epochs are a dozen steps, so epoch starts weigh
    on ``all`` far more than on a real run's thousands of steps per epoch."""
    from semmae.engine.pretrain import pretrain
    from semmae.utils.run_logger import read_log

    pretrain(cfg)
    records = [r for r in read_log(Path(cfg.out) / "log.jsonl") if "img_per_s" in r]
    steady = [r for prev, r in zip(records[1:], records[2:]) if r["epoch"] == prev["epoch"]]
    starts = [r for prev, r in zip(records[1:], records[2:]) if r["epoch"] != prev["epoch"]]

    def med(rows: list[dict], key: str) -> float:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    return {
        "all": statistics.median(logged(Path(cfg.out) / "log.jsonl", "img_per_s")),
        "steady": med(steady, "img_per_s"),
        "epoch_start": med(starts, "img_per_s"),
        "data_wait": med(steady, "data_wait"),
    }


def section_e2e(s: Sizes, rep: Report, data: dict, scratch: Path, results: dict) -> None:
    held = results.get("held", {})
    pack = str(data["pack"])
    for name, kw in (
        ("JPEG folder, random", dict(data=str(data["folder"]), masking="random")),
        (
            "JPEG folder + part cache, adaptive",
            dict(data=str(data["folder"]), parts=str(data["parts16"]), masking="adaptive"),
        ),
        ("pack with part cells, adaptive", dict(data=pack, masking="adaptive")),
        # auto gives a pack at most 2 workers; is the loader what holds it back on a GPU?
        ("pack with part cells, adaptive, 6 workers", dict(data=pack, masking="adaptive", num_workers="6")),
    ):
        cfg = _config(
            s, data["folder"], scratch / f"e2e-{len(results)}-{name[:4]}", max_steps=s.e2e_steps, **kw
        )
        w = _e2e_windows(cfg)
        results[name] = rate = w["steady"]
        ref = held.get(kw["masking"])
        rep.add("e2e", f"{name}: e2e, windows inside an epoch", rate, "img/s")
        rep.add("e2e", f"{name}: e2e, windows with an epoch start", w["epoch_start"], "img/s")
        rep.add("e2e", f"{name}: share of a steady window waiting for data", w["data_wait"])
        if ref:
            target = ">= 0.9" if name.startswith("pack") else ""
            frac = rate / ref
            rep.add(
                "e2e",
                f"{name}: e2e inside an epoch / held step",
                frac,
                target=target,
                ok=frac >= 0.9 if target else None,
            )
    pack = data["pack_report"]
    rep.add("e2e", "pack throughput (JPEG folder -> pack)", pack.num_images / pack.seconds, "img/s")
    rep.add("e2e", f"pack bytes per image ({s.pack_side} px + part cells)", pack.bytes_per_image, "B")


class _JpegBytes(torch.utils.data.Dataset):
    """The files' bytes of an ImageFolder, read in loader workers (what the device's decoder needs)."""

    def __init__(self, root: Path):
        from semmae.data.folder import scan_image_folder

        _, self.samples = scan_image_folder(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> bytes:  # bytes, not tensors: one file descriptor less per image between
        return Path(self.samples[i][0]).read_bytes()  # processes


def section_jpeg_gpu(s: Sizes, rep: Report, data: dict, scratch: Path, results: dict) -> None:
    """The JPEG fast path: workers read the bytes, the device decodes the batch (one batched ``decode_jpeg``),
    resizes each image to the pack side and runs the pack's batch crop-flip; then the trainer's step."""
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    from semmae.data.batch_augment import BatchPartAugment
    from semmae.data.workers import auto_worker_plan

    trainer = bench_trainer(_config(s, data["folder"], scratch / "jpeg-gpu", num_workers="0"))
    side, dev = s.pack_side, trainer.device
    workers = 0 if s.smoke else max(1, auto_worker_plan(True, "cuda").count)
    loader = torch.utils.data.DataLoader(
        _JpegBytes(data["folder"]),
        s.batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=list,
        drop_last=True,
    )
    aug = BatchPartAugment(s.img, trainer.patch_size, side, scale=tuple(trainer.cfg.crop_scale))
    gen, batches = torch.Generator().manual_seed(0), iter(loader)

    def step(i: int) -> None:
        nonlocal batches
        raw = next(batches, None)
        if raw is None:  # an epoch's end
            batches = iter(loader)
            raw = next(batches)
        decoded = decode_jpeg([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw], device=dev)
        sizes = torch.tensor([[d.shape[1], d.shape[2]] for d in decoded])
        pixels = [
            F.interpolate(d[None].float(), (side, side), mode="bilinear", antialias=True) for d in decoded
        ]
        pixels = torch.cat(pixels).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        trainer.step_at(aug({"pixels": pixels, "size": sizes}, gen), i)

    (seconds,) = step_times(step, s.e2e_steps, dev, warmup=s.warmup, each=False)
    rate = s.batch * s.e2e_steps / seconds
    rep.add("jpeg_gpu", f"JPEG bytes -> batched decode_jpeg({dev.type}) -> crop-flip -> step", rate, "img/s")
    ref = results.get("held", {}).get("random")
    if ref:
        rep.add("jpeg_gpu", "decode_jpeg path / held step (random)", rate / ref)


def section_resume(s: Sizes, rep: Report, data: dict, scratch: Path) -> None:
    from semmae.engine.pretrain import pretrain
    from semmae.utils.io import load_checkpoint
    from semmae.utils.rundir import read_log

    kw = dict(data=str(data["pack"]), masking="adaptive", log_every=1, batch_size=min(s.batch, 64))
    # --compile too on the GPU (compiling takes minutes on a CPU): the checkpoint holds the plain module's keys
    for compiled in (False, True) if not s.smoke else (False,):
        out = scratch / ("resume-compiled" if compiled else "resume")
        pretrain(_config(s, data["folder"], out, max_steps=4, compile=compiled, **kw))
        pretrain(_config(s, data["folder"], out, max_steps=8, resume="auto", compile=compiled, **kw))
        steps = [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r]
        how = "--compile, " if compiled else ""
        rep.add(
            "resume",
            f"{how}logged steps after stop at 4 + --resume auto to 8",
            str(steps),
            target="[1..8], once each",
            ok=steps == list(range(1, 9)),
        )
        latest = sorted((out / "checkpoints").glob("ckpt-*.pth"))[-1]
        keys = load_checkpoint(latest)["model"]
        wrapped = sum("_orig_mod" in k for k in keys)
        rep.add(
            "resume",
            f"{how}checkpoint keys with torch.compile's _orig_mod prefix",
            wrapped,
            target="0",
            ok=wrapped == 0,
        )


def section_b8(s: Sizes, rep: Report, data: dict, scratch: Path, results: dict) -> None:
    def b8_config(name: str, **kw):
        """ViT-B/8 keeping its most-foreground quarter, adaptive masking, JPEGs + the patch-8 part cache."""
        return _config(
            s,
            data["folder"],
            scratch / name,
            model=s.b8,
            parts=str(data["parts8"]),
            masking="adaptive",
            fg_keep=0.25,
            **kw,
        )

    rate = _held(bench_trainer(b8_config("b8", num_workers="0")), s.held_steps, s.warmup, parts=True)
    rep.add("b8", f"{s.b8} keep 1/4, adaptive: step", rate, "img/s")
    ref = results.get("held", {}).get("adaptive")
    if ref:
        rep.add(
            "b8", "B/8 keep-1/4 / B/16 step", rate / ref, target="0.9 .. 1.1", ok=0.9 <= rate / ref <= 1.1
        )
    cfg = b8_config("b8-e2e", max_steps=s.e2e_steps // 2 or 2)
    rep.add("b8", f"{s.b8} keep 1/4 from JPEG + cache: e2e", _e2e(cfg), "img/s")


def section_fp16(s: Sizes, rep: Report, data: dict, scratch: Path) -> None:
    from semmae.utils.rundir import read_log

    out = scratch / "fp16"
    cfg = _config(
        s,
        data["folder"],
        out,
        data=str(data["pack"]),
        masking="adaptive",
        precision=s.fp16,
        accum_iter=2,
        batch_size=max(2, s.batch // 2),
        clip_grad=1.0,
        max_steps=s.e2e_steps // 2 or 2,
        log_every=1,
    )
    rate, add = _e2e(cfg), functools.partial(rep.add, "fp16")
    recs = [r for r in read_log(out / "log.jsonl") if "loss" in r]
    finite = all(r["loss"] == r["loss"] and abs(r["loss"]) < 1e6 for r in recs)
    ckpt = torch.load(next((out / "checkpoints").glob("*.pth")), weights_only=True, map_location="cpu")
    scale = ckpt["scaler"].get("scale")
    add(f"{s.fp16} + accum 2 + clip 1.0: e2e", rate, "img/s")
    add(
        "losses finite, grad norms logged",
        finite and all(r.get("grad_norm") is not None for r in recs),
        ok=finite,
    )
    add(
        "saved loss scale",
        float(scale) if scale is not None else "none (no grad scaler)",
        target="a number with fp16" if not s.smoke else "",
    )


def section_compiled(s: Sizes, rep: Report, data: dict, scratch: Path, results: dict) -> None:
    trainer = bench_trainer(
        _config(s, data["folder"], scratch / "compiled", compile=True, num_workers="0"), "adaptive"
    )
    t0 = time.perf_counter()
    _held(trainer, 1, 1, parts=True)
    rep.add("compiled", "compile time (first steps)", time.perf_counter() - t0, "s")
    rate = _held(trainer, s.held_steps, 2, parts=True)
    rep.add("compiled", "adaptive step, --compile", rate, "img/s")
    eager = results.get("held", {}).get("adaptive")
    if eager:
        rep.add("compiled", "compiled / eager", rate / eager, target=">= 1.0", ok=rate >= eager)


def section_profile(s: Sizes, rep: Report, results: dict) -> None:
    from torch.profiler import ProfilerActivity, profile

    trainer = results["trainer"]
    batch = trainer.held
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device == "cuda" else [])
    steps = 3

    def profiled(n: int):
        with profile(activities=activities) as prof:
            for i in range(n):
                trainer.step_at(batch, 1000 + i)
            synchronize(s.device)  # the measurement's own sync (and the profiler's): in the baseline too
        return prof.key_averages()

    base = {e.key: e.count for e in profiled(0)}
    events = profiled(steps)
    count = {e.key: e.count for e in events}
    syncs = {  # per step, less what a profile of no step counts
        k: (count.get(k, 0) - base.get(k, 0)) / steps
        for k in (
            "aten::_local_scalar_dense",
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaEventSynchronize",
            "cudaMemcpy",
        )
    }
    for k, v in syncs.items():
        gated = s.device == "cuda" and k in (
            "aten::_local_scalar_dense",
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
        )
        rep.add("profile", f"{k} per step", v, target="0" if gated else "", ok=(v == 0) if gated else None)
    attn = sorted(
        {
            e.key
            for e in events
            if any(w in e.key.lower() for w in ("flash", "fmha", "attention", "sdpa", "efficient"))
        }
    )
    rep.add("profile", "attention ops/kernels", "; ".join(a[:60] for a in attn[:8]) or "none seen")
    if s.device == "cuda":
        rep.add(
            "profile",
            "flash-attention kernel in the step",
            any("flash" in a.lower() for a in attn),
            ok=any("flash" in a.lower() for a in attn),
        )
    sort = "cuda_time_total" if s.device == "cuda" else "cpu_time_total"
    (rep.out / "profile.txt").write_text(events.table(sort_by=sort, row_limit=40))


SECTIONS = (
    "env",
    "masking",
    "augment",
    "held",
    "e2e",
    "jpeg_gpu",
    "resume",
    "b8",
    "fp16",
    "compiled",
    "profile",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU (checks the script, measures nothing)"
    )
    ap.add_argument(
        "--out", default=os.environ.get("OUT") or "gpu-validate-out", help="results folder (default $OUT)"
    )
    ap.add_argument(
        "--budget-s", type=float, default=450.0, help="skip the remaining sections after this many seconds"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    args = ap.parse_args(argv)
    s = Sizes(args.smoke)
    if not s.smoke and not torch.cuda.is_available():
        print(
            "gpu_validate: no CUDA device; run with --smoke for the CPU check of the script", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rep = Report(
        out, {"smoke": s.smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "mae_published": MAE_PUBLISHED}
    )
    scratch = Path(tempfile.mkdtemp(prefix="gpu-validate-"))
    results: dict = {}
    failed = []
    try:
        data: dict = {}
        for name in SECTIONS:
            if name in args.skip:
                continue
            if time.perf_counter() - start > args.budget_s:
                rep.add(name, "skipped", "time budget spent")
                continue
            t0 = time.perf_counter()
            try:
                if name not in ("env", "masking", "augment") and not data:
                    data.update(make_data(s, scratch / "data"))
                    rep.add("data", "images, caches and pack made", time.perf_counter() - t0, "s")
                fn = globals()[f"section_{name}"]
                kwargs = {"data": data, "scratch": scratch, "results": results}
                params = fn.__code__.co_varnames[: fn.__code__.co_argcount]
                fn(s, rep, **{k: v for k, v in kwargs.items() if k in params})
            except Exception as e:  # a section fails alone
                failed.append(name)
                rep.add(
                    name,
                    "FAILED",
                    f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                    ok=False,
                )
                (out / f"error-{name}.txt").write_text(traceback.format_exc())
            rep.add(name, "section time", time.perf_counter() - t0, "s")
            rep.write()
            if s.device == "cuda":
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rep.meta["total_s"] = round(time.perf_counter() - start, 1)
    rep.write()
    print(
        f"gpu_validate: {rep.meta['total_s']} s; failed sections: {', '.join(failed) or 'none'}; wrote {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
