"""CLI verb ``semmae export`` (torch-free to import: the handler imports the exporters when it runs)."""

from __future__ import annotations

import argparse


def _export(args: argparse.Namespace) -> int:
    from semmae.export import export_checkpoint

    out = export_checkpoint(
        args.checkpoint, args.out, args.format, args.push_to_hub, overwrite=args.overwrite
    )
    print(
        f"semmae export: wrote {out}" + (f" and pushed it to {args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0


def register(sub) -> None:
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier semmae export at --out (a file or folder semmae did not write is never replaced)",
    )
    p.set_defaults(func=_export)
