"""CLI verb ``semmae export`` (torch-free to import: the handler imports the exporters when it runs). The checkpoint
path is resolved here, once, and the checkpoint loaded once: the exporters get the file and its content."""

from __future__ import annotations

import argparse
from pathlib import Path


def _source(path: str | Path) -> Path:
    """A checkpoint file as given; a ``semmae parts train`` run folder -> its ``checkpoint.pth``; a pretraining (or
    bootstrap) run folder -> its latest checkpoint."""
    from semmae.parts.train import CHECKPOINT_NAME
    from semmae.utils.io import checkpoint_file

    path = Path(path)
    if path.is_dir() and (path / CHECKPOINT_NAME).is_file() and not (path / "checkpoints").is_dir():
        return path / CHECKPOINT_NAME
    return checkpoint_file(path)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
) -> Path:
    """What ``semmae export`` writes for ``checkpoint`` (a file or run folder) at ``out``: a part learner's folder
    for a part checkpoint (``fmt`` must be None), else the encoder in ``fmt`` (:data:`semmae.export.encoder.FORMATS`;
    None: from ``out``'s name); with ``push_to_hub`` (``USER/REPO``) the folder is uploaded. An earlier export at
    ``out`` is replaced only with ``overwrite``; anything else there is refused. Returns the path written."""
    from semmae.errors import UserError
    from semmae.export import encoder
    from semmae.parts.checkpoint import FORMAT as PARTS_FORMAT
    from semmae.utils.io import load_checkpoint

    path = _source(checkpoint)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == PARTS_FORMAT:  # the part learner of Sec. 3.1
        from semmae.export.part_learner import export_part_learner

        if fmt == "safetensors":
            raise UserError(
                "a part learner exports to a folder (its head + its frozen encoder); drop --format"
            )
        return export_part_learner(path, out, push_to_hub, overwrite=overwrite, ckpt=ckpt)
    return encoder.export_encoder(path, out, fmt, push_to_hub, ckpt=ckpt, overwrite=overwrite)


def _export(args: argparse.Namespace) -> int:
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
