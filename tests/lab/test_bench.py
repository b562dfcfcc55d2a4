"""``semmae_lab.bench``: the benchmarks' quiet config, the held batch and the timed public step."""

from __future__ import annotations

import torch

from semmae.masking import build_masking
from semmae_lab.bench import SYNTHETIC_NO_PART, bench_config, bench_trainer, held_batch, held_step_rate


def test_held_batch_steps_the_trainer_with_synthetic_parts_and_adaptive_masking(engine_images, tmp_path):
    cfg = bench_config(
        engine_images, tmp_path / "run", "mae_vit_micro_patch8", 32, batch_size=4, num_workers=0
    )
    assert (cfg.vis_every, cfg.ckpt_every, cfg.logger, cfg.precision) == (0, 0, "none", "fp32")
    trainer = bench_trainer(cfg, "adaptive")
    assert cfg.masking == "random" and type(trainer.strategy) is type(build_masking("adaptive"))
    batch = held_batch(trainer, synthetic_parts=True)
    assert batch["part_ids"].shape == (4, trainer.model_core.num_patches)
    assert int(batch["part_ids"].max()) <= SYNTHETIC_NO_PART == trainer.no_part_id
    before = [p.detach().clone() for p in trainer.model_core.parameters()]
    assert held_step_rate(trainer, batch, steps=2, warmup=1) > 0
    changed = [not torch.equal(a, b) for a, b in zip(before, trainer.model_core.parameters())]
    assert any(changed)  # the trainer's own step ran: the optimiser moved the weights
