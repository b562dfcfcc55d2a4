"""CLI verbs ``semmae pretrain`` and ``semmae export``."""

from __future__ import annotations

import argparse

from semmae.config import add_verb, resolve_config
from semmae.engine.config import PretrainConfig

PRETRAIN_EPILOG = """examples:
  semmae pretrain --config pretrain/tiny_cpu --data data/synth/train --masking random --out runs/tiny
  semmae pretrain --config pretrain/semmae_vitb16 --data imagenet/train --parts parts.cache --out runs/b16
  torchrun --nproc-per-node 8 -m semmae.cli pretrain --config pretrain/semmae_vitb16 ... --resume auto
"""


def _pretrain(args: argparse.Namespace) -> int:
    cfg = resolve_config(PretrainConfig, args)
    from semmae.engine.pretrain import pretrain

    pretrain(cfg)  # it ends with a line naming its checkpoint
    return 0


def _export(args: argparse.Namespace) -> int:
    from semmae.engine.export import export_encoder

    out = export_encoder(args.checkpoint, args.out)
    print(f"semmae export: wrote {out}")
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

    desc = (
        "Export a pretrained encoder as a timm VisionTransformer safetensors file, loadable with "
        "timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=FILE))."
    )
    p = sub.add_parser(
        "export", help="Export a pretrained encoder as a timm ViT safetensors file", description=desc
    )
    p.add_argument(
        "--checkpoint", required=True, help="pretraining checkpoint (.pth) or run directory (its latest)"
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=_export)
