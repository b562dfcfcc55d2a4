"""Demo budgets: how much data and training each stage gets. ``small`` is the README's main job (3 min 22-50 s wall on
an idle 2-core CPU, measured 2026-11-29); ``micro`` is the test suite's smoke run; ``medium`` gives more trustworthy
numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Budget:
    num_images: int  # synthetic images, train + val
    img_size: int
    model: str  # registered MAE name; its encoder is the part encoder and the evaluated encoder
    depth: int
    decoder_depth: int
    batch_size: int
    bootstrap_epochs: int  # random-masking MAE that gives the offline part encoder
    parts_epochs: int  # epochs of cached tokens (configs/parts/tiny_cpu.yaml); part quality follows steps
    pretrain_epochs: int
    warmup_epochs: int
    linprobe_epochs: int
    seeds: int  # SemMAE and MAE are each pretrained with this many seeds
    # MAE's blr is 1.5e-4 for 800 epochs at batch 4096; runs of a few hundred steps at batch 64 barely move at
    # that rate (lr = blr * 64 / 256 = 3.75e-5), so the demo scales it up, as the CPU presets do
    blr: float = 1e-3
    num_parts: int = 4
    blur_kernel: int = 3


_SMALL = Budget(
    num_images=600,
    img_size=64,
    model="mae_vit_tiny_patch8",
    depth=6,
    decoder_depth=2,
    batch_size=64,
    bootstrap_epochs=6,
    parts_epochs=40,
    pretrain_epochs=6,
    warmup_epochs=1,
    linprobe_epochs=30,
    seeds=2,
)

BUDGETS: dict[str, Budget] = {
    "micro": Budget(
        num_images=40,
        img_size=32,
        model="mae_vit_micro_patch8",
        depth=2,
        decoder_depth=1,
        batch_size=16,
        bootstrap_epochs=1,
        parts_epochs=2,
        pretrain_epochs=1,
        warmup_epochs=0,
        linprobe_epochs=3,
        seeds=1,
    ),
    "small": _SMALL,
    # the small setting on five times the data, trained longer, with a third seed
    "medium": replace(
        _SMALL,
        num_images=3000,
        bootstrap_epochs=15,
        parts_epochs=20,
        pretrain_epochs=30,
        warmup_epochs=3,
        linprobe_epochs=90,
        seeds=3,
    ),
}
