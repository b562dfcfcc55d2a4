"""One prepared GPU validation run: what the CPU test suite cannot check, in about 7 minutes on one H100/H200.

Sections, in priority order (each one is timed, fails alone, writes the report when it ends, and is skipped when
its estimated cost, :data:`COST_S`, would take the run past ``--budget-s``; ``--only`` runs the named ones):

1. ``env``: torch / CUDA / GPU, native bf16, TF32, timm's fused attention, and which SDPA backends run (flash
   attention at head dim 64 in bf16 is the one ViT-B uses).
2. ``verbs``: every CLI verb once, small but real, through ``semmae.cli.main`` in this process on the device
   (``--device cuda``; ``cpu`` under ``--smoke``): ``data synth`` (224 px), ``parts train`` (the paper's
   ``parts/ibot_vits16`` on a randomly initialised frozen ViT-S/16, a few steps), ``parts export`` (train and val),
   ``parts eval`` (against the synthetic set's part masks), ``bootstrap`` (``bootstrap/ibot_vits16``, a few
   steps; the encoder the evaluations read), ``knn``, ``linprobe --mode fast`` and ``--mode full``,
   ``finetune``, ``segment train`` and ``demo --budget small`` (skipped under ``--smoke``: its ``micro`` budget
   alone takes ~30 s on two busy cores). Each: wall time, img/s where a count of images means something (wall
   clock, start-up included; ``bootstrap`` also its log's img/s), peak memory (``max_memory_allocated``, reset
   before each; None on the CPU). A verb that fails fails the section with its one-line error (its traceback
   goes to ``error-verbs-<verb>.txt``); the verbs that need its output are skipped.
3. ``reference``: semmae's held step (random masking) against a plain MAE step (``benchmarks/mae_reference.py``:
   facebookresearch/mae's model and step, written here) at the same model (ViT-B/16), batch and precision,
   timed in turns, 3 rounds; the ratio semmae / reference, and each one's MFU: :func:`mae_step_flops` x img/s
   over the GPU's vendor dense bf16 peak (``PEAK_BF16_DENSE_TFLOPS``: H100 SXM 989, H200 989, A100 312).
4. ``memory``: peak memory of the held step for ViT-B/16 and ViT-B/8 keeping 1/4 at batch 64/128/256 and ViT-L/16
   at 128, in bf16 and fp16; a batch that runs out of memory is recorded as ``OOM`` and larger ones are not tried.
5. ``held``: ViT-B/16, 224 px, batch 256, bf16 - the pretrain step (masks + forward + backward + AdamW) on one
   batch held on the GPU, random vs adaptive masking, with MFU; the same step's forward under the sync-debug
   mode; ViT-L/16 next to facebookresearch/mae's published pretraining time (see ``MAE_PUBLISHED``).
6. ``fp16``: the held step in fp16 (grad scaler) against bf16, timed in turns at the held batch; each step run
   once under ``torch.cuda.set_sync_debug_mode("error")``; and ``GradScaler.step`` with a non-fused AdamW (the
   optimiser of finetune, segment and parts train), which reads ``found_inf`` back every step.
7. ``compiled``: the held step with ``--compile`` vs eager, its MFU and its ratio to the eager reference.
8. ``profile``: ``torch.profiler`` over held steps: attention kernels, host syncs per step, top CUDA kernels.
9. ``masking``: adaptive (Algorithm 1) vs random mask of a batch on the device, drawn up front then built with
   ``torch.cuda.set_sync_debug_mode("error")`` on (a host sync raises).
10. ``augment``: the packed crop-flip of a batch of 256 noise images (256 -> 224 px), one ``interpolate`` per box
    vs the batched resample: time, the largest difference with float32 matmuls exact and in TF32, host syncs.
11. ``b8``: ViT-B/8 with the most-foreground quarter of its 28x28 patches (``--fg-keep 0.25``), vs ViT-B/16.
12. ``fp16_e2e``: fp16 + grad scaler + accumulation 2 + clipping 1.0 trains from the pack with finite losses and a
    saved loss scale (it logs every step, so its img/s is not a precision comparison: ``fp16`` is).
13. ``e2e``: ``semmae pretrain`` end to end from a JPEG folder (generated here) and from a pack of it with part
    cells (adaptive masking), img/s from the runs' own logs, against the held step; the pack's img/s and bytes
    per image.
14. ``jpeg_gpu``: the JPEG fast path: loader workers read only the files' bytes, the GPU decodes each batch with
    one batched ``torchvision.io.decode_jpeg(device="cuda")`` call, resizes it to the pack side and runs the pack's
    batch crop-flip; img/s against the held step.
15. ``resume``: a run stopped at step 4 and continued with ``--resume auto`` logs steps 1..8 once each (no gap),
    eager and ``--compile``.

Cost: :data:`COST_S` holds each section's estimated seconds on one H100, from the H200 run of 2026-12-04
(``benchmarks/results/2026-12-04-gpu-validate-h200.md``: env 1.4 s, masking 0.7, augment 1.3, data 37-41, held
54-63, e2e 53-99, jpeg_gpu 7.5, resume 9.3 + about 90 s since it also compiles, b8 12, fp16 10, compiled 56,
profile 4.3), rounded up for the H100's slower memory; ``verbs``, ``reference``, ``memory`` and the ``fp16``
timing never ran on a GPU and are guesses from their step counts (``demo --budget small`` is most of ``verbs``:
3.5 min on two CPU cores, its models tiny). The sections that need the generated JPEGs and pack (``data``, about
40 s, made once) count that in too. With the default ``--budget-s 430`` the default run is env, verbs,
reference, memory, held, fp16, compiled, profile, masking and augment (425 s estimated: :func:`default_plan`);
the rest (b8, fp16_e2e, e2e, jpeg_gpu, resume; all measured on the H200) are listed as skipped and run with
``--only`` in a second call.

Targets are printed beside each figure: adaptive / random step >= 0.97, eager MFU >= 30 %, compiled MFU >= 40 %,
semmae / reference >= 1.0 eager and >= 1.3 compiled, fp16 step within 10 % of bf16, packed e2e >= 0.9 of the held
step, compiled >= eager, B/8 keep-1/4 step within 10 % of B/16, the batched crop at least as fast as the per-box
one and within 1 uint8 level of it. Everything it reports goes under ``$OUT`` (or ``--out``):
``gpu-validate.json``, ``gpu-validate.md``, ``profile.txt``; scratch (images, pack, checkpoints, the verbs' runs)
lives in a temporary folder that is deleted. Needs torch, torchvision and timm (and this repository's ``src`` on
the path); the runs log to ``log.jsonl`` only (``--logger none``).

    OUT=/tmp/out PYTHONPATH=src python benchmarks/gpu_validate.py                   # on the GPU box, ~7 min
    OUT=/tmp/out PYTHONPATH=src python benchmarks/gpu_validate.py --only e2e resume # what the budget left out
    PYTHONPATH=src python benchmarks/gpu_validate.py --smoke --out /tmp/v           # tiny sizes, on the CPU (a test)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
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

from semmae_lab.bench import SYNTHETIC_NO_PART, bench_config, bench_trainer, held_batch, held_step_rate
from semmae_lab.results_table import cell, markdown_table
from semmae_lab.timing import logged, step_times, synchronize

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
        # verbs: the synthetic part set (train + val, 20 % val), the evaluations' batch, loader workers
        self.synth_images, self.synth_size = (20, 32) if smoke else (320, 224)
        self.verb_batch, self.verb_workers = (8, "0") if smoke else (64, "8")
        self.train_epochs = 1 if smoke else 2  # parts train and bootstrap: 2 x 4 steps at batch 64 on the GPU
        self.seg_crop, self.seg_iters, self.seg_batch = (32, 2, 2) if smoke else (224, 20, 16)
        self.demo = (
            not smoke
        )  # demo --budget small on the GPU; its micro budget takes ~30 s on two busy cores
        # reference: semmae's held step vs the plain MAE step, in turns
        self.ref_size = (
            "micro" if smoke else "base"
        )  # benchmarks/mae_reference.py REFERENCE_SIZES, = self.b16
        self.ref_steps, self.ref_rounds = (1, 2) if smoke else (10, 3)
        # memory: (label, model, fg_keep, batches) x precisions
        self.memory = (
            ("B/16", self.b16, 1.0, (2, 4) if smoke else (64, 128, 256)),
            ("B/8 keep 1/4", self.b8, 0.25, (2,) if smoke else (64, 128, 256)),
            ("L/16", self.large, 1.0, (2,) if smoke else (128,)),
        )
        self.memory_precisions = ("fp32", "bf16") if smoke else ("bf16", "fp16")
        # images in the small folder the held-step sections build their trainers on (>= every batch they use)
        self.bench_images = 8 if smoke else 256


def _config(s: Sizes, folder: Path, out: Path, **kw):
    """The quiet measured run (:func:`semmae_lab.bench.bench_config`) at the run's sizes; ``kw`` override."""
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

    folder = write_images(root / "jpeg", count=s.images, size=s.image_side, classes=4)
    files = ImageFolderDataset(folder).relative_paths
    out = {"folder": folder}
    for seed, (name, model) in enumerate((("parts16", s.b16), ("parts8", s.b8))):
        out[name] = _part_cache(root, name, folder, files, s.img // _patch(model), seed)
    out["pack"] = root / "pack"
    workers = 0 if s.smoke else max(1, (os.cpu_count() or 2) - 1)
    out["pack_report"] = pack_dataset(
        folder, out["pack"], s.pack_side, parts=out["parts16"], workers=workers, progress=False
    )
    return out


def _part_cache(root: Path, name: str, folder: Path, files: list[str], grid: int, seed: int = 0) -> Path:
    """A part cache of smooth random "parts" (ids 0..6, 6 = no part) and foreground on a ``grid`` x ``grid``
    patch grid for the images of ``folder``."""
    from semmae.data.part_cache import PartCache

    g = torch.Generator().manual_seed(seed)
    writer = PartCache.create(root / f"{name}.cache", files, grid=grid, num_parts=6, root=folder)
    blobs = torch.rand(len(files), 1, 4, 4, generator=g)
    big = torch.nn.functional.interpolate(blobs, size=(grid, grid), mode="bilinear")[:, 0]
    writer.write(0, (big * 7).floor().clamp(max=6).long(), big)
    return writer.finalize().path


def bench_data(s: Sizes, scratch: Path, results: dict) -> dict[str, Path]:
    """A small JPEG folder (``s.bench_images`` images, enough for one batch of any size the held-step sections
    use) with part caches on the B/16 and B/8 grids: what a trainer is built on when its batch is made up
    (:func:`synthetic_batch`). Made once (a second or two), kept in ``results``."""
    if "bench_data" not in results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _helpers_images import write_images

        from semmae.data.folder import ImageFolderDataset

        root = scratch / "bench"
        folder = write_images(root / "jpeg", count=s.bench_images, size=48, classes=2)
        files = ImageFolderDataset(folder).relative_paths
        out = {"folder": folder}
        for name, model in (("parts16", s.b16), ("parts8", s.b8)):
            out[name] = _part_cache(root, name, folder, files, s.img // _patch(model))
        results["bench_data"] = out
    return results["bench_data"]


def _patch(model: str) -> int:
    from semmae.models import model_config

    return model_config(model).patch_size


def synthetic_batch(trainer, batch_size: int, parts: bool, seed: int = 1) -> dict[str, torch.Tensor]:
    """A held batch of ``batch_size`` normal-noise images on the trainer's device (the step's cost does not depend
    on the pixels), with uniform part ids and foreground scores when ``parts`` (as :func:`held_batch` adds them)."""
    g = torch.Generator().manual_seed(seed)
    dev, side = trainer.device, trainer.cfg.img_size
    batch = {"image": torch.randn(batch_size, 3, side, side, generator=g).to(dev)}
    if parts:
        shape = (batch_size, trainer.model_core.num_patches)
        batch["part_ids"] = torch.randint(0, SYNTHETIC_NO_PART + 1, shape, generator=g).to(dev)
        batch["fg"] = torch.rand(shape, generator=g).to(dev)
        trainer.no_part_id = SYNTHETIC_NO_PART
    return batch


def mae_reference():
    """``benchmarks/mae_reference.py`` (beside this script)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mae_reference

    return mae_reference


def step_flops_per_image(trainer) -> int:
    """FLOPs of one image's pretraining step in ``trainer``'s model (:func:`mae_reference.mae_step_flops`)."""
    c, cfg = trainer.model_config, trainer.cfg
    return mae_reference().mae_step_flops(
        c["img_size"],
        c["patch_size"],
        c["embed_dim"],
        c["depth"],
        c["decoder_embed_dim"],
        c["decoder_depth"],
        mlp_ratio=c["mlp_ratio"],
        mask_ratio=cfg.mask_ratio,
        in_chans=c["in_chans"],
        fg_keep=cfg.fg_keep,
    )


def add_mfu(rep: Report, section: str, label: str, img_per_s: float, flops_per_image: int, target: str = ""):
    """A row with the model FLOPs utilisation of a step at ``img_per_s``: achieved FLOP/s over the GPU's vendor
    dense bf16 peak; "n/a" off CUDA or on a GPU the peak table does not know. Returns the MFU or None."""
    peak = None
    if torch.cuda.is_available():
        peak = mae_reference().peak_bf16_tflops(torch.cuda.get_device_name(0))
    if peak is None or not img_per_s == img_per_s:
        why = "no CUDA device" if not torch.cuda.is_available() else "GPU not in PEAK_BF16_DENSE_TFLOPS"
        rep.add(section, f"{label}: MFU", f"n/a ({why})", target=target)
        return None
    mfu = 100 * img_per_s * flops_per_image / (peak[1] * 1e12)
    limit = float(target.split()[-1]) if target else None
    rep.add(
        section,
        f"{label}: MFU ({flops_per_image / 1e9:.1f} GFLOP/img, {peak[0]} peak {peak[1]:.0f} TFLOPS)",
        mfu,
        "%",
        target=f"{target} %" if target else "",
        ok=mfu >= limit if limit is not None else None,
    )
    return mfu


def interleaved_rates(fns: dict[str, Any], batch: int, steps: int, rounds: int, device, warmup: int) -> dict:
    """img/s of each step function (``fn(i)``), timed in turns: ``rounds`` rounds of one ``steps``-step window
    each (the device's queue kept full inside a window); the median over the rounds."""
    for fn in fns.values():
        step_times(fn, 0, device, warmup=warmup)
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            (seconds,) = step_times(fn, steps, device, start=1000 + r * steps, each=False)
            rates[name].append(batch * steps / seconds)
    return {k: statistics.median(v) for k, v in rates.items()}


def _peak_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _reset_peak(device: str) -> None:
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class _Tail(io.TextIOBase):
    """A text stream that passes every write on to ``stream`` and keeps the last few thousand characters (where a
    failed verb's one-line error is)."""

    def __init__(self, stream):
        self.stream, self.text = stream, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.text = (self.text + text)[-4000:]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    def error_line(self) -> str:
        lines = [line.strip() for line in self.text.replace("\r", "\n").splitlines() if line.strip()]
        errors = [line for line in lines if ": error:" in line or "Error" in line]
        return (errors or lines or ["(nothing on stderr)"])[-1][:240]


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


# ----------------------------------------------------------------------------------------------- verbs
class _Verbs:
    """Runs CLI verbs in this process (``semmae.cli.main``) and reports each one's wall time, img/s and peak
    memory; a verb that fails is reported with its one-line error and the verbs that need it are skipped."""

    def __init__(self, s: Sizes, rep: Report, root: Path):
        self.s, self.rep, self.root = s, rep, root
        self.failed: dict[str, str] = {}
        self.skipped: list[str] = []

    def __call__(
        self,
        name: str,
        argv: list[str],
        images: int | None = None,
        needs: tuple[str, ...] = (),
        log: Path | None = None,
    ) -> bool:
        """Run ``semmae <argv>``; ``images``: how many images it put through a model (for img/s); ``log``: a
        ``log.jsonl`` whose ``img_per_s`` (after its first window) is reported too."""
        from semmae.cli import main as cli

        add = functools.partial(self.rep.add, "verbs")
        missing = [n for n in needs if n in self.failed or n in self.skipped]
        if missing:
            self.skipped.append(name)
            add(f"{name}: skipped", f"needs {', '.join(missing)}, which did not run", ok=False)
            return False
        print(f"[verbs] semmae {' '.join(argv)}", flush=True)
        _reset_peak(self.s.device)
        tail = _Tail(sys.stderr)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(tail):
            try:
                code = cli(argv)
            except SystemExit as e:  # argparse refuses the command line before the CLI's guard runs
                code = e.code if isinstance(e.code, int) else 2
            except Exception as e:  # noqa: BLE001 - the guard turns errors into exit codes; anything else too
                print(f"semmae {name}: error: {type(e).__name__}: {e}", file=sys.stderr)
                code = 1
        synchronize(self.s.device)
        wall = time.perf_counter() - t0
        if code != 0:
            self.failed[name] = tail.error_line()
            add(f"{name}: FAILED (exit {code})", self.failed[name], ok=False)
            logs = sorted(self.root.rglob("error.log"), key=lambda p: p.stat().st_mtime)
            if logs:
                shutil.copy(logs[-1], self.rep.out / f"error-verbs-{name.replace(' ', '-')}.txt")
            return False
        add(f"{name}: wall", wall, "s")
        if images:
            add(f"{name}: img/s (wall clock, start-up included)", images / wall, "img/s")
        if log is not None and log.is_file():
            rates = logged(log, "img_per_s")
            if rates:
                add(f"{name}: img/s (its log, median window)", statistics.median(rates), "img/s")
        add(f"{name}: peak memory allocated", _peak_gib(self.s.device), "GiB")
        return True


def section_verbs(s: Sizes, rep: Report, scratch: Path) -> None:
    """Every verb once, small but real, on the device (see the module docstring)."""
    root = scratch / "verbs"
    data, runs = root / "synth", root / "runs"
    dev = ["--device", s.device]
    workers = ["--num-workers", s.verb_workers]
    b = str(s.verb_batch)
    run = _Verbs(s, rep, root)
    run(
        "data synth",
        [
            "data",
            "synth",
            "--out",
            str(data),
            "--num-images",
            str(s.synth_images),
            "--size",
            str(s.synth_size),
        ]
        + (["--num-classes", "2"] if s.smoke else []),
        images=s.synth_images,
    )
    n_train = n_val = 0
    if (data / "synth.json").is_file():
        splits = json.loads((data / "synth.json").read_text())["splits"]
        n_train, n_val = splits["train"], splits["val"]

    # part learning: the paper's preset on a randomly initialised frozen ViT-S/16 (no download), a few steps
    if s.smoke:
        preset = ["--config", "parts/tiny_cpu", "--encoder", "vit_micro_patch8_32", "--img-size", "32"]
        preset += ["--decoder-dim", "16", "--decoder-min-dim", "8", "--proj-dim", "16"]
    else:
        preset = ["--config", "parts/ibot_vits16"]
    parts, epochs = runs / "parts", ["--epochs", str(s.train_epochs)]
    run(
        "parts train",
        ["parts", "train", "--data", str(data / "train"), "--out", str(parts), *preset, *epochs]
        + [
            "--batch-size",
            b,
            "--warmup-epochs",
            "0",
            "--panel-images",
            "2",
            "--logger",
            "none",
            *dev,
            *workers,
        ],
        images=n_train * s.train_epochs,
        needs=("data synth",),
    )
    grid = str(s.synth_size // (8 if s.smoke else 16))
    for split, n in (("train", n_train), ("val", n_val)):
        run(
            f"parts export {split}",
            ["parts", "export", "--data", str(data / split), "--checkpoint", str(parts), "--grid", grid]
            + ["--out", str(runs / f"cache_{split}"), "--batch-size", b, *dev, *workers],
            images=n,
            needs=("parts train",),
        )
    run(
        "parts eval",
        ["parts", "eval", "--data", str(data / "val"), "--cache", str(runs / "cache_val")]
        + [
            "--masks",
            str(data / "masks" / "val"),
            "--out",
            str(runs / "part_metrics.json"),
            "--batch-size",
            b,
        ]
        + [*dev, *workers],
        images=n_val,
        needs=("parts export val",),
    )

    # the encoder the evaluations read: a few steps of the iBOT ViT-S/16 preset (tiny ViT under --smoke)
    boot = runs / "bootstrap"
    if s.smoke:
        preset = [
            "--model",
            "vit_micro_patch8",
            "--img-size",
            "32",
            "--local-size",
            "16",
            "--local-crops",
            "2",
        ]
        preset += ["--out-dim", "64", "--head-hidden-dim", "32", "--head-bottleneck-dim", "16"]
        preset += ["--precision", "fp32", "--warmup-epochs", "0"]
        preset += ["--warmup-teacher-temp-epochs", "0", "--freeze-last-layer", "0"]
    else:
        preset = [
            "--config",
            "bootstrap/ibot_vits16",
            "--warmup-epochs",
            "1",
            "--warmup-teacher-temp-epochs",
            "1",
        ]
    run(
        "bootstrap",
        ["bootstrap", "--data", str(data / "train"), "--out", str(boot), *preset, *epochs, "--batch-size", b]
        + ["--log-every", "1", "--eval-every", "0", "--no-progress", "--logger", "none", *dev, *workers],
        images=n_train * s.train_epochs,
        needs=("data synth",),
        log=boot / "log.jsonl",
    )
    enc = ["--data", str(data), "--checkpoint", str(boot), "--batch-size", b, *dev, *workers]
    run(
        "knn",
        ["knn", *enc, "--out", str(runs / "knn"), *(["--k", "5"] if s.smoke else [])],
        images=n_train + n_val,
        needs=("bootstrap",),
    )
    fast = [
        "--mode",
        "fast",
        "--epochs",
        "5",
        "--warmup-epochs",
        "1",
        "--blrs",
        "0.1",
        "1.0",
        "--fast-views",
        "1",
    ]
    run(
        "linprobe fast",
        ["linprobe", *enc, "--out", str(runs / "linprobe-fast"), *fast],
        images=n_train + n_val,
        needs=("bootstrap",),
    )
    full = ["--mode", "full", "--epochs", "1", "--warmup-epochs", "0", "--optimizer", "sgd", "--blrs", "0.5"]
    run(
        "linprobe full",
        ["linprobe", *enc, "--out", str(runs / "linprobe-full"), *full],
        images=n_train + n_val,
        needs=("bootstrap",),
    )
    run(
        "finetune",
        ["finetune", *enc, "--out", str(runs / "finetune"), "--epochs", "1", "--warmup-epochs", "0"],
        images=n_train + n_val,
        needs=("bootstrap",),
    )
    crop, iters, seg_batch = str(s.seg_crop), s.seg_iters, s.seg_batch
    seg = ["--crop-size", crop, "--scale-base", crop, "--iters", str(iters), "--batch-size", str(seg_batch)]
    seg += ["--warmup-iters", "1", "--eval-every", "0", "--num-vis", "1", "--precision", "auto"]
    if s.smoke:
        seg += ["--head-channels", "16", "--aux-channels", "8", "--pool-scales", "1", "2"]
    run(
        "segment train",
        ["segment", "train", "--config", "segment/tiny_synth", "--data", str(data), "--checkpoint", str(boot)]
        + ["--out", str(runs / "segment"), *seg, *dev, *workers],
        images=iters * seg_batch + n_val,
        needs=("bootstrap",),
    )
    if s.demo:
        run("demo", ["demo", "--budget", "small", "--out", str(runs / "demo"), "--no-progress", *dev])
    else:
        rep.add(
            "verbs",
            "demo",
            "skipped under --smoke (its micro budget alone takes ~30 s on two busy CPU cores)",
        )
    if run.failed or run.skipped:
        problems = [f"{k}: {v}" for k, v in run.failed.items()] + [f"{k}: skipped" for k in run.skipped]
        raise RuntimeError("; ".join(problems))


# ------------------------------------------------------------------------------------ reference and memory
def section_reference(s: Sizes, rep: Report, scratch: Path, results: dict) -> None:
    """semmae's held step (random masking, as MAE) against the plain MAE step of ``mae_reference.py``: the same
    model size, batch, precision and device, timed in turns; the ratio and each one's MFU."""
    ref = mae_reference()
    bench = bench_data(s, scratch, results)
    trainer = bench_trainer(_config(s, bench["folder"], scratch / "reference", num_workers="0"))
    batch = synthetic_batch(trainer, s.batch, parts=False)
    c = trainer.model_config
    fields = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "decoder_embed_dim")
    fields += ("decoder_depth", "decoder_num_heads", "mlp_ratio", "norm_pix_loss")
    sizes = {k: c[k] for k in fields}
    expected = {"img_size": 224, "patch_size": 16, **ref.REFERENCE_SIZES[s.ref_size]}
    if any(sizes[k] != v for k, v in expected.items()):
        raise RuntimeError(f"{s.b16} is {sizes}, not the reference's {s.ref_size} size {expected}")
    torch.manual_seed(0)
    step = ref.ReferenceStep(ref.ReferenceMAE(**sizes), s.device, s.precision, batch_size=s.batch)
    synced = ref.ReferenceStep(ref.ReferenceMAE(**sizes), s.device, s.precision, batch_size=s.batch)
    synced.mae_loop_syncs = True
    imgs = batch["image"]
    fns = {
        "semmae held step": lambda i: trainer.step_at(batch, i),
        "reference MAE step": lambda i: step(imgs),
        "reference MAE step + the release's per-step loss.item() and synchronize": lambda i: synced(imgs),
    }
    rates = interleaved_rates(fns, s.batch, s.ref_steps, s.ref_rounds, torch.device(s.device), s.warmup)
    flops = step_flops_per_image(trainer)
    what = f"{s.b16} {s.img}px b{s.batch} {s.precision}, median of {s.ref_rounds} rounds in turns"
    for name, rate in rates.items():
        rep.add("reference", f"{name} ({what})", rate, "img/s")
    ours, plain = rates["semmae held step"], rates["reference MAE step"]
    rep.add("reference", "semmae / reference (eager)", ours / plain, "x", ">= 1.0", ok=ours >= plain)
    add_mfu(rep, "reference", "semmae held step, eager", ours, flops, ">= 30")
    add_mfu(rep, "reference", "reference MAE step, eager", plain, flops)
    results["reference"] = plain


def section_memory(s: Sizes, rep: Report, scratch: Path, results: dict) -> None:
    """Peak memory of the held step (:func:`synthetic_batch`) per model, batch and precision; the first batch that
    runs out of memory is recorded as OOM and the larger ones are not tried."""
    bench = bench_data(s, scratch, results)
    for n, (label, model, fg_keep, batches) in enumerate(s.memory):
        for precision in s.memory_precisions:
            kw: dict[str, Any] = dict(
                model=model, precision=precision, batch_size=min(batches), num_workers="0"
            )
            if fg_keep < 1:
                kw.update(fg_keep=fg_keep, masking="adaptive", parts=str(bench["parts8"]))
            out = scratch / f"memory-{n}-{precision}"  # a trainer holds its run folder
            trainer = bench_trainer(_config(s, bench["folder"], out, **kw))
            oom = None
            for b in batches:
                name = f"{label} ({model}) b{b} {precision}: peak allocated"
                if oom is not None:
                    rep.add("memory", name, f"not tried (b{oom} ran out of memory)")
                    continue
                try:
                    batch = synthetic_batch(trainer, b, parts=fg_keep < 1)
                    _reset_peak(s.device)
                    for i in range(2):  # the first step also allocates AdamW's moments
                        trainer.step_at(batch, i)
                    rep.add("memory", name, _peak_gib(s.device), "GiB")
                except torch.OutOfMemoryError:
                    rep.add("memory", name, "OOM")
                    oom = b
                finally:
                    batch = None
                    trainer.optimizer.zero_grad(set_to_none=True)
                    _reset_peak(s.device)
            del trainer
            _reset_peak(s.device)


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


def section_held(s: Sizes, rep: Report, bench: dict, scratch: Path, results: dict) -> None:
    rates = {}
    for masking in ("random", "adaptive"):
        trainer = bench_trainer(
            _config(s, bench["folder"], scratch / f"held-{masking}", num_workers="0"), masking
        )
        rates[masking] = _held(trainer, s.held_steps, s.warmup, parts=masking != "random")
        label = f"{s.b16} {s.img}px b{s.batch} {s.precision} {masking}: step"
        rep.add("held", label, rates[masking], "img/s")
        add_mfu(rep, "held", label, rates[masking], step_flops_per_image(trainer), ">= 30")
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
            bench["folder"],
            scratch / "held-large",
            model=s.large,
            batch_size=s.large_batch,
            num_workers="0",
        )
    )
    rate = _held(large, s.held_steps // 2 or 1, s.warmup, parts=False)
    pub = MAE_PUBLISHED["vit_l16_img_s_per_v100"]
    label = f"{s.large} b{s.large_batch} {s.precision} random: step"
    rep.add("held", label, rate, "img/s")
    add_mfu(rep, "held", label, rate, step_flops_per_image(large))
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
    from semmae.utils.run_logger import read_log

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


def section_fp16(s: Sizes, rep: Report, bench: dict, scratch: Path) -> None:
    """The held step in fp16 (grad scaler) against bf16 at the held batch, timed in turns; host syncs of each
    step; and what ``GradScaler.step`` does with an optimiser that is not fused (finetune, segment, parts)."""
    add = functools.partial(rep.add, "fp16")
    trainers, batches, fns = {}, {}, {}
    for precision in (s.precision, s.fp16):  # bf16 vs fp16 (fp32 vs bf16 under --smoke)
        cfg = _config(s, bench["folder"], scratch / f"fp16-{precision}", precision=precision, num_workers="0")
        trainers[precision] = t = bench_trainer(cfg, "adaptive")
        batches[precision] = b = synthetic_batch(t, s.batch, parts=True)
        fns[precision] = lambda i, t=t, b=b: t.step_at(b, i)
    rates = interleaved_rates(fns, s.batch, s.ref_steps, s.ref_rounds, torch.device(s.device), s.warmup)
    for precision, rate in rates.items():
        add(
            f"{s.b16} b{s.batch} adaptive, {precision}: held step ({s.ref_rounds} rounds in turns)",
            rate,
            "img/s",
        )
    ratio = rates[s.fp16] / rates[s.precision]
    add(f"{s.fp16} / {s.precision} held step", ratio, "x", ">= 0.9", ok=ratio >= 0.9 if not s.smoke else None)
    state = trainers[s.fp16].scaler.state_dict()  # {} without a grad scaler
    add("loss scale after the timed steps", state.get("scale", "none (no grad scaler)"))
    if state:  # 65,536 (2^16) at the start; it doubles only after this many steps without an overflow
        add("grad scaler growth interval", state.get("growth_interval"), "steps")
    if s.device != "cuda":
        return
    for precision, t in trainers.items():
        b = batches[precision]
        check_no_host_sync(
            rep, "fp16", f"host syncs in a whole {precision} step", lambda t=t, b=b: t.step_at(b, 7)
        )
    # GradScaler.step reads found_inf back (.item()) unless the optimiser is fused (_step_supports_amp_scaling):
    # the pretrain's and bootstrap's AdamW is fused on CUDA, the layer-decay AdamW of finetune / segment and
    # parts train's are not
    from semmae.engine.optim import layer_decay_optimizer
    from semmae.engine.precision import Precision
    from semmae.engine.trainer import LossScaler

    t, b = trainers[s.fp16], batches[s.fp16]
    opt = layer_decay_optimizer(t.model_core, 1e-4, 0.05, 0.75, (0.9, 0.95))
    scaler = LossScaler(Precision("fp16", "cuda"))
    loss = t.forward_step(b["image"], b["part_ids"], b["fg"], t.draws(s.batch, 0, 0))[0]["loss"]
    torch.cuda.set_sync_debug_mode("error")
    try:
        scaler(loss, opt, t.model_core.parameters)
        found = "none"
    except RuntimeError as e:
        found = f"raised: {str(e).splitlines()[0][:80]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
        opt.zero_grad(set_to_none=True)
    add("host sync in GradScaler.step with the non-fused layer-decay AdamW (finetune, segment)", found)


def section_fp16_e2e(s: Sizes, rep: Report, data: dict, scratch: Path) -> None:
    from semmae.utils.run_logger import read_log

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
    rate, add = _e2e(cfg), functools.partial(rep.add, "fp16_e2e")
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


def section_compiled(s: Sizes, rep: Report, bench: dict, scratch: Path, results: dict) -> None:
    trainer = bench_trainer(
        _config(s, bench["folder"], scratch / "compiled", compile=True, num_workers="0"), "adaptive"
    )
    t0 = time.perf_counter()
    _held(trainer, 1, 1, parts=True)
    rep.add("compiled", "compile time (first steps)", time.perf_counter() - t0, "s")
    rate = _held(trainer, s.held_steps, 2, parts=True)
    rep.add("compiled", "adaptive step, --compile", rate, "img/s")
    add_mfu(rep, "compiled", "adaptive step, --compile", rate, step_flops_per_image(trainer), ">= 40")
    eager = results.get("held", {}).get("adaptive")
    if eager:
        rep.add("compiled", "compiled / eager", rate / eager, target=">= 1.0", ok=rate >= eager)
    plain = results.get("reference")
    if plain:
        ratio = rate / plain
        rep.add("compiled", "compiled / eager reference MAE step", ratio, "x", ">= 1.3", ok=ratio >= 1.3)


def section_profile(s: Sizes, rep: Report, scratch: Path, results: dict) -> None:
    from torch.profiler import ProfilerActivity, profile

    if "trainer" not in results:  # the held section did not run (--only, or the budget)
        bench = bench_data(s, scratch, results)
        trainer = bench_trainer(_config(s, bench["folder"], scratch / "profile", num_workers="0"), "adaptive")
        trainer.held = synthetic_batch(trainer, s.batch, parts=True)
        results["trainer"] = trainer
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


#: the sections in priority order: what issue 38 needs first, then what the 2026-12-04 run measured already
SECTIONS = (
    "env",
    "verbs",
    "reference",
    "memory",
    "held",
    "fp16",
    "compiled",
    "profile",
    "masking",
    "augment",
    "b8",
    "fp16_e2e",
    "e2e",
    "jpeg_gpu",
    "resume",
)
#: estimated seconds of each section on one H100 (see the module docstring for where each figure comes from);
#: a section starts only when the time spent plus its estimate stays within --budget-s
COST_S = {
    "env": 2,
    "verbs": 200,  # never run on a GPU: about 90 s for demo --budget small, 5-10 s for each other verb
    "reference": 25,  # never run: two ViT-B/16 builds, 3 rounds x 3 steps x 10 held steps at ~75 ms
    "memory": 40,  # never run: 6 trainer builds (ViT-L/16 the largest), 2 steps per batch
    "held": 60,  # 54-63 s on the H200
    "fp16": 30,  # never run: two ViT-B/16 trainers, 3 rounds x 2 x 10 steps, the sync checks
    "compiled": 60,  # 56 s on the H200, 51 of them compiling
    "profile": 5,
    "masking": 1,
    "augment": 2,
    "b8": 15,
    "fp16_e2e": 12,
    "e2e": 110,  # 53 s (run 1, three runs) to 99 s (run 2, four runs) on the H200
    "jpeg_gpu": 9,
    "resume": 110,  # 9 s eager on the H200, plus a compiled run and its resume (~50 s of compiling each)
}
#: the generated JPEGs, part caches and pack of the sections that take ``data`` (37-41 s on the H200), made once
DATA_COST_S = 45


def _params(name: str) -> tuple[str, ...]:
    fn = globals()[f"section_{name}"]
    return fn.__code__.co_varnames[: fn.__code__.co_argcount]


def section_cost(name: str, data_made: bool) -> int:
    """Estimated seconds of section ``name`` on one H100, the generated data included when it needs it first."""
    return COST_S[name] + (DATA_COST_S if "data" in _params(name) and not data_made else 0)


def default_plan(budget_s: float) -> tuple[list[str], list[str], int]:
    """What a default GPU run would do if every section took its estimate: (run, skipped, estimated seconds)."""
    run, skipped, spent, data_made = [], [], 0, False
    for name in SECTIONS:
        cost = section_cost(name, data_made)
        if spent + cost > budget_s:
            skipped.append(name)
            continue
        run.append(name)
        spent += cost
        data_made = data_made or "data" in _params(name)
    return run, skipped, spent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU (checks the script, measures nothing)"
    )
    ap.add_argument(
        "--out", default=os.environ.get("OUT") or "gpu-validate-out", help="results folder (default $OUT)"
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=430.0,
        help="start a section only while the seconds spent plus its estimate (COST_S) stay within this; with "
        "--only or --smoke only the seconds spent count",
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    ap.add_argument("--only", nargs="+", default=[], choices=SECTIONS, help="run only these sections")
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
    failed, skipped = [], []
    chosen = [n for n in SECTIONS if (not args.only or n in args.only) and n not in args.skip]
    try:
        data: dict = {}
        for name in chosen:
            fn, params = globals()[f"section_{name}"], _params(name)
            cost = section_cost(name, bool(data))
            spent = time.perf_counter() - start
            if spent + (0 if args.only or s.smoke else cost) > args.budget_s:
                rep.add(name, "skipped", f"budget: {spent:.0f} s spent + ~{cost} s > {args.budget_s:.0f} s")
                skipped.append(name)
                continue
            t0 = time.perf_counter()
            try:
                if "data" in params and not data:
                    data.update(make_data(s, scratch / "data"))
                    rep.add("data", "images, caches and pack made", time.perf_counter() - t0, "s")
                kwargs = {"data": data, "scratch": scratch, "results": results}
                if "bench" in params:
                    kwargs["bench"] = bench_data(s, scratch, results)
                fn(s, rep, **{k: v for k, v in kwargs.items() if k in params})
            except Exception as e:  # a section fails alone
                failed.append(name)
                rep.add(
                    name,
                    "FAILED",
                    f"{type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ''}",
                    ok=False,
                )
                (out / f"error-{name}.txt").write_text(traceback.format_exc())
            rep.add(name, "section time", time.perf_counter() - t0, "s")
            rep.meta.update(failed=failed, skipped=skipped)
            rep.write()
            if s.device == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rep.meta["total_s"] = round(time.perf_counter() - start, 1)
    rep.meta.update(failed=failed, skipped=skipped)
    rep.write()
    later = f"; skipped for the budget: {' '.join(skipped)} (run them with --only {' '.join(skipped)})"
    print(
        f"gpu_validate: {rep.meta['total_s']} s; failed sections: {', '.join(failed) or 'none'}"
        f"{later if skipped else ''}; wrote {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
