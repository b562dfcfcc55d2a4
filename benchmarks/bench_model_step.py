"""One MAE training step: semantic-guided vs random masking, and patch-8 keep-1/4 vs patch-16, side by side.

A step = make the mask (inside the timed region) + forward + backward + AdamW step. Same model, same images,
same device, steps timed in turns, medians over repeats. Targets: semantic / random throughput >= 0.97;
patch-8 (28x28 grid, the most-foreground quarter enters) / patch-16 step time within 10 % at the same image size.
On a GPU the ViT-B models run under bf16 autocast; on a CPU ViT-Tiny stands in (read the ratios, not seconds).

    python benchmarks/bench_model_step.py [--quick | --smoke] [--device cuda]

``--smoke`` (the test suite's): ViT-Tiny at 32 px, batch 2, one turn after one warm-up, on the CPU.

The step is written out here (mask + the MAE's forward + backward + AdamW), not the trainer's: it times the model
and the masking alone; ``bench_compile.py`` and ``bench_pretrain.py`` time the trainer's own step.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from semmae.masking import build_masking, foreground_keep_index
from semmae.models import create_model
from semmae_lab.results_table import row
from semmae_lab.timing import median_times


def _trainer(name: str, img_size: int, device: torch.device):
    model = create_model(name, img_size=img_size).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext
    )
    return model, opt, autocast


def run(quick: bool = False, device: str | None = None, smoke: bool = False) -> list[dict]:
    dev = torch.device(device or ("cpu" if smoke or not torch.cuda.is_available() else "cuda"))
    gpu = dev.type == "cuda"
    size = "base" if gpu else "tiny"
    img = 32 if smoke else 224 if (gpu or not quick) else 112
    batch = 2 if smoke else (64 if not quick else 32) if gpu else (8 if not quick else 4)
    repeats = 1 if smoke else (20 if not quick else 5) if gpu else (10 if not quick else 3)
    warmup = 1 if smoke else 2
    g = torch.Generator(device=dev).manual_seed(0)
    imgs = torch.randn(batch, 3, img, img, device=dev, generator=g)

    def stepper(name: str, strategy: str, keep_fraction: float | None):
        model, opt, autocast = _trainer(name, img, dev)
        grid, length = model.grid_size, model.num_patches
        part_ids = torch.randint(0, 7, (batch, length), device=dev, generator=g)
        fg = torch.rand(batch, length, device=dev, generator=g)
        masking = build_masking(strategy)

        def step() -> None:
            keep = None
            ids, score, hw = part_ids, fg, grid
            if keep_fraction is not None:
                keep = foreground_keep_index(fg, keep_fraction, g)
                ids, score, hw = part_ids.gather(1, keep), fg.gather(1, keep), keep.shape[1]
            mask = masking(batch, hw, 0.5, g, part_ids=ids, fg=score, device=dev)
            with autocast():
                loss = model(imgs, mask, keep)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    p16, p8 = f"mae_vit_{size}_patch16", f"mae_vit_{size}_patch8"
    t_sem, t_rand = median_times(
        [stepper(p16, "adaptive", None), stepper(p16, "random", None)], repeats, dev, warmup
    )
    t_p8, t_p16 = median_times(
        [stepper(p8, "adaptive", 0.25), stepper(p16, "adaptive", None)], repeats, dev, warmup
    )
    tag = f"{size}, B={batch}, {img}px, {dev.type}"
    return [
        row(f"step: semantic masking ({p16}, {tag})", t_sem * 1e3, "ms"),
        row(f"step: random masking ({p16}, {tag})", t_rand * 1e3, "ms"),
        row(f"step: semantic / random throughput ({tag})", t_rand / t_sem, "x", ">= 0.97"),
        row(f"step: patch-8 keep-1/4 ({p8}, {tag})", t_p8 * 1e3, "ms"),
        row(f"step: patch-8 keep-1/4 / patch-16 time ({tag})", t_p8 / t_p16, "x", "<= 1.10"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite's)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    args = parser.parse_args()
    for row in run(args.quick, args.device, args.smoke):
        print(f"{row['name']:<75} {row['value']:10.3f} {row['unit']:<3} {row['target']}")
