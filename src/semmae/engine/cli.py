"""CLI verbs ``semmae pretrain`` and ``semmae export``."""

from __future__ import annotations

import argparse

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


def _export(args: argparse.Namespace) -> int:
    from semmae.engine.export import export_encoder

    out = export_encoder(args.checkpoint, args.out, args.format, args.push_to_hub)
    print(
        f"semmae export: wrote {out}" + (f" and pushed it to {args.push_to_hub}" if args.push_to_hub else "")
    )
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
        "Export a pretrained (or bootstrap) encoder as a timm VisionTransformer: a folder (config.json, "
        "model.safetensors, README.md model card) that timm.create_model('local-dir:FOLDER', pretrained=True) "
        "loads without semmae, or a single .safetensors file."
    )
    epilog = """examples:
  semmae export --checkpoint runs/b16 --out exports/semmae_b16
  semmae export --checkpoint runs/b16 --out exports/semmae_b16 --push-to-hub USER/semmae-vit-b16
  semmae export --checkpoint runs/b16/checkpoints/ckpt-000001000.pth --out enc.safetensors
"""
    p = sub.add_parser(
        "export",
        help="Export a pretrained encoder as a timm model folder (or one safetensors file)",
        description=desc,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", required=True, help="pretraining checkpoint (.pth) or run directory (its latest)"
    )
    p.add_argument("--out", required=True, help="output folder (timm-dir) or .safetensors file")
    p.add_argument(
        "--format",
        choices=("timm-dir", "safetensors"),
        default=None,
        help="timm-dir: config.json + model.safetensors + README.md; safetensors: the weights alone "
        "(default: safetensors when --out ends in .safetensors, else timm-dir)",
    )
    p.add_argument(
        "--push-to-hub",
        metavar="USER/REPO",
        default=None,
        help="upload the folder to this Hugging Face Hub model repo (token: HF_TOKEN or `hf auth login`)",
    )
    p.set_defaults(func=_export)
