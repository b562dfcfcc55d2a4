"""CLI verb ``semmae bootstrap``."""

from __future__ import annotations

from semmae.bootstrap.config import BootstrapConfig
from semmae.config import add_verb

EPILOG = """examples:
  semmae bootstrap --config bootstrap/tiny_cpu --data imagenette2_96/train --out runs/boot
  semmae parts train --config parts/tiny_cpu --data imgs --encoder-checkpoint runs/boot/checkpoints/... --out parts
  torchrun --nproc-per-node 8 -m semmae.cli bootstrap --config bootstrap/ibot_vits16 --data imagenet/train ...
"""


def _bootstrap(cfg: BootstrapConfig) -> int:
    from semmae.bootstrap.train import bootstrap

    bootstrap(cfg)  # it ends with a line naming its encoder checkpoint
    return 0


def register(sub) -> None:
    desc = (
        "Train a semantic part encoder by iBOT-style self-distillation (student + EMA teacher ViT, multi-crop, "
        "centring and sharpening, masked-patch distillation; --no-ibot = DINO) on any ImageFolder. Its "
        "checkpoints feed `parts train --encoder-checkpoint`, `knn`, `linprobe`, `export` (docs/bootstrap.md)."
    )
    add_verb(
        sub,
        "bootstrap",
        BootstrapConfig,
        _bootstrap,
        "self-distilled (iBOT / DINO) part encoder on your own images",
        desc,
        EPILOG,
    )
