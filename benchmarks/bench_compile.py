"""``--compile`` on the CPU: the pretrain step (adaptive masking + MAE forward + backward + AdamW) eager vs compiled.

Two trainers per model, built the same way (``semmae pretrain``'s :class:`~semmae.engine.pretrain.Pretrainer`, one
with ``compile=True``: ``torch.compile`` of the MAE; the masking runs eagerly before it and has no host sync), one
batch held in memory, fp32. After warm-up (the compiled trainer compiles there; its compile time is reported),
blocks of steps alternate between the two so the drift of a shared machine hits both alike; the table gives the
median img/s of each and their ratio. Models: ViT-Tiny and ViT-Small MAEs (patch 16, 224 px).

    python benchmarks/bench_compile.py [--quick | --smoke] [--batch 8] [--blocks 6] [--out FILE.md]

``--smoke`` (the test suite's): the micro MAE (width 32, 32 px), batch 2, one block of one step each, compiled
with ``--backend aot_eager`` (dynamo's capture of the forward and backward graphs, without inductor's code
generation, which takes minutes on a CPU).

On a GPU the same question is answered by ``benchmarks/gpu_validate.py`` (ViT-B/16, bf16).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers_images import write_images  # noqa: E402

from semmae_lab.bench import bench_config, bench_trainer, held_batch, held_step_times  # noqa: E402
from semmae_lab.results_table import markdown_table  # noqa: E402


def _trainer(data: Path, tmp: str, model: str, batch: int, compile_: bool, img: int, backend: str):
    cfg = bench_config(data, tmp, model, img, max_steps=1, compile=compile_, batch_size=batch, num_workers=0)
    trainer = bench_trainer(cfg, "adaptive")
    if compile_ and backend != "inductor":  # the trainer compiles with torch.compile's default, inductor
        trainer.model = torch.compile(trainer.model_core, backend=backend)
    return trainer


def compare(
    data: Path, model: str, batch: int, blocks: int, per_block: int, img: int = 224, backend: str = "inductor"
) -> dict:
    warm = 1 if blocks * per_block <= 1 else 2  # the smoke run: one warm-up step each
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        eager = _trainer(data, a, model, batch, False, img, backend)
        compiled = _trainer(data, b, model, batch, True, img, backend)
        held = held_batch(eager, synthetic_parts=True)
        compiled.no_part_id = eager.no_part_id
        held_step_times(eager, held, 0, warmup=warm)
        (compile_s,) = held_step_times(compiled, held, 1, warmup=0)  # compiles forward and backward
        held_step_times(compiled, held, 0, warmup=warm - 1, start=1)
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for k in range(blocks):
            order = (("eager", eager), ("compiled", compiled))
            for name, tr in order if k % 2 == 0 else order[::-1]:
                times[name] += held_step_times(tr, held, per_block, warmup=0, start=2 + k * per_block)
    e, c = (batch / statistics.median(times[n]) for n in ("eager", "compiled"))
    return {"model": model, "batch": batch, "eager": e, "compiled": c, "ratio": c / e, "compile_s": compile_s}


COLUMNS = [
    "model ({img} px, adaptive masking, fp32)",
    "batch",
    "eager img/s",
    "compiled img/s",
    "compiled / eager",
]


def table(rows: list[dict], img: int = 224) -> str:
    cells = [
        [r["model"], r["batch"], f"{r['eager']:.2f}", f"{r['compiled']:.2f}", f"{r['ratio']:.3f}"]
        for r in rows
    ]
    return markdown_table(
        [COLUMNS[0].format(img=img), *COLUMNS[1:], "compile s"],
        [c + [f"{r['compile_s']:.0f}"] for c, r in zip(cells, rows)],
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ViT-Tiny only, fewer blocks")
    ap.add_argument(
        "--smoke", action="store_true", help="the micro MAE, one step per block (the test suite's)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--per-block", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (--smoke: aot_eager)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    models = ["mae_vit_tiny_patch16"] if args.quick else ["mae_vit_tiny_patch16", "mae_vit_small_patch16"]
    img = 224
    if args.smoke:
        models, img, args.batch, args.blocks, args.per_block = ["mae_vit_micro_patch8"], 32, 2, 1, 1
        args.backend = "aot_eager"
    elif args.quick:
        args.blocks = 2
    with tempfile.TemporaryDirectory() as tmp:
        data = write_images(Path(tmp) / "imgs", count=max(16, args.batch), size=64)
        rows = [compare(data, m, args.batch, args.blocks, args.per_block, img, args.backend) for m in models]
    text = (
        f"torch {torch.__version__}, {os.cpu_count()} CPU(s), {torch.get_num_threads()} thread(s); "
        f"median of {args.blocks} alternating blocks x {args.per_block} steps; backend {args.backend}\n\n"
        + table(rows, img)
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
