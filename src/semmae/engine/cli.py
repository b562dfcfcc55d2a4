"""CLI verb ``semmae pretrain``."""

from __future__ import annotations

from semmae.config import add_verb
from semmae.engine.config import PretrainConfig

PRETRAIN_EPILOG = """examples:
  semmae pretrain --config pretrain/tiny_cpu --data data/synth/train --masking random --out runs/tiny
  semmae pretrain --config pretrain/semmae_vitb16 --data imagenet/train --parts parts.cache --out runs/b16
  torchrun --nproc-per-node 8 -m semmae.cli pretrain --config pretrain/semmae_vitb16 ... --resume auto
"""


def _pretrain(cfg: PretrainConfig) -> int:
    from semmae.engine.pretrain import pretrain

    pretrain(cfg)  # it ends with a line naming its checkpoint
    return 0


def register(sub) -> None:
    desc = (
        "MAE / SemMAE pretraining (paper Sec. 4.1). One process per GPU under torchrun; resumable to the step "
        "with --resume auto. Flags override --config presets (see `docs/pretraining.md`)."
    )
    add_verb(
        sub,
        "pretrain",
        PretrainConfig,
        _pretrain,
        "MAE / SemMAE pretraining (torchrun for many GPUs)",
        desc,
        PRETRAIN_EPILOG,
    )
