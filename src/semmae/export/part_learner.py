"""The part learner (paper Sec. 3.1) exported the way encoders are (``semmae export --checkpoint PART_CHECKPOINT``):
a folder that holds everything the part maps need, so it outlives the encoder file the training pointed at.

Layout::

    parts.json          {"format": "semmae-part-learner", "version": 1, "head": PartHeadSpec fields,
                         "encoder": {"folder": "encoder", "img_size", "feature_layer", "trained_with": ...},
                         "config": the training config, "epoch", "metrics"}
    parts.safetensors   the part head (part tokens + decoder: PartModel's state dict)
    encoder/            the frozen encoder as a timm model folder (config.json, model.safetensors, README.md)
    README.md           the card

:func:`semmae.parts.checkpoint.read_part_checkpoint` (the reading side, which part training and the part
cache use too) reads the folder as a part checkpoint, so ``semmae parts
export | show | eval --checkpoint FOLDER`` take it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.export.encoder import TIMM_FILES, claim_export_folder, timm_config, write_timm_dir
from semmae.models.encoder_record import vit_record
from semmae.models.timm_dir import PAPER, PAPER_ID
from semmae.parts.checkpoint import (
    ENCODER_DIR,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    HEAD_NAME,
    SPEC_NAME,
    load_part_model,
)
from semmae.utils.io import atomic_write_bytes, atomic_write_text
from semmae.utils.ownership import current_entries, end_output_folder, start_output_folder

#: what a part-learner export writes in its folder
PART_FILES = (SPEC_NAME, HEAD_NAME, ENCODER_DIR, "README.md")
#: what its owner marker records: the entries and every file below ``encoder/`` (a user's file put inside it is
#: never deleted by ``--overwrite``)
PART_FILE_PATHS = (*PART_FILES, *(f"{ENCODER_DIR}/{name}" for name in TIMM_FILES))


def export_part_learner(
    checkpoint: Path,
    out: str | Path,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    ckpt: dict[str, Any] | None = None,
) -> Path:
    """Write the part learner of the part checkpoint ``checkpoint`` (``ckpt``: its content, already loaded from
    that file) to the folder ``out``; returns it."""
    from safetensors.torch import save

    from semmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    out = Path(out)
    if out.suffix in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
        raise UserError(
            f"--out {out}: a part learner exports to a folder; give a folder name without {out.suffix}"
        )
    owner = claim_export_folder(out, {"--checkpoint": str(checkpoint)}, overwrite, adopt=_old_part_export)
    encoder, model, ckpt = load_part_model(checkpoint, ckpt=ckpt)  # the parts room, entered once
    record, enc_sd = vit_record(encoder.vit, "the part learner's encoder")
    facts = record.export_facts()  # what the export writes about the encoder, read once as plain data
    trained_with = ckpt.extra["frozen_encoder"]
    source = trained_with.get("checkpoint") or f"random-init {trained_with.get('arch')}"
    enc_card = (
        f"# Frozen encoder of a SemMAE part learner\n\nThe ViT that the part learner in the parent folder runs on "
        f"(paper Sec. 3.1), exported from `{source}` at {record.img_size} px. It loads with "
        f'`timm.create_model("local-dir:THIS_FOLDER", pretrained=True)`. Its licence is the one of `{source}`.\n'
    )
    meta = {"format": "pt", "model_config": json.dumps(facts["record"]), "arch": facts["timm_name"]}
    weights = save(enc_sd, metadata=meta)
    start_output_folder(out, owner, PART_FILE_PATHS)
    try:
        config = timm_config(
            facts, IMAGENET_MEAN, IMAGENET_STD, description=f"part-learning encoder from {source}"
        )
        write_timm_dir(out / ENCODER_DIR, config, weights, enc_card)
        head_sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(out / HEAD_NAME, save(head_sd, metadata={"format": "pt", "semmae": EXPORT_FORMAT}))
        spec = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "head": ckpt.extra["head"],
            "encoder": {
                "folder": ENCODER_DIR,
                "img_size": encoder.img_size,
                "feature_layer": encoder.feature_layer,
                "trained_with": trained_with,
            },
            "config": ckpt.config if ckpt.config is not None else {},
            "epoch": ckpt.epoch,
            "metrics": ckpt.extra.get("metrics", {}),
        }
        atomic_write_text(out / "README.md", part_learner_card(spec, facts, checkpoint))
        atomic_write_text(
            out / SPEC_NAME, json.dumps(spec, indent=2) + "\n"
        )  # last: it marks the folder done
    finally:
        end_output_folder(out)
    if push_to_hub:
        from semmae.export.hub import push_folder

        push_folder(out, push_to_hub)
    return out


def _old_part_export(out: Path) -> bool:
    """A part-learner folder ``semmae export`` wrote before owner markers: nothing but its entries (plain files and
    a real ``encoder`` folder) and a ``parts.json`` of the export's format."""
    names = current_entries(out)
    if not names or not set(names) <= set(PART_FILES) or SPEC_NAME not in names:
        return False
    for name in names:
        p = out / name
        if p.is_symlink() or not (p.is_dir() if name == ENCODER_DIR else p.is_file()):
            return False
    try:
        spec = json.loads((out / SPEC_NAME).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(spec, dict) and spec.get("format") == EXPORT_FORMAT


def part_learner_card(spec: dict[str, Any], facts: dict[str, Any], checkpoint: Path) -> str:
    """The ``README.md`` of a part-learner folder (``facts``: its encoder's
    :meth:`~semmae.models.encoder_record.EncoderRecord.export_facts`)."""
    head, config = spec["head"], spec.get("config") or {}
    record, name = facts["record"], facts["timm_name"]
    trained = spec["encoder"]["trained_with"]
    source = trained.get("checkpoint") or f"random-init `{trained.get('arch')}`"
    metrics = spec.get("metrics") or {}
    metric_lines = [f"| {k} | {v:.4g} |" for k, v in metrics.items() if isinstance(v, (int, float))]
    lines = [
        "---",
        "library_name: semmae",
        "license: other",
        "tags: [semmae, part-learning, image-segmentation]",
        "---",
        "",
        f"# SemMAE part learner ({head['num_parts']} parts, {name} encoder)",
        "",
        f"The semantic part learner of *{PAPER}*, {PAPER_ID}, Sec. 3.1 (Eq. 1-7): {head['num_parts']} part tokens "
        "and a decoder on a frozen ViT. Its part maps (`semmae parts export --checkpoint THIS_FOLDER`) are the "
        "part cache that semantic-guided masking reads (Sec. 3.2).",
        "",
        "| | |",
        "|---|---|",
        f"| frozen encoder | `encoder/` (a timm folder): width {record['embed_dim']}, depth {record['depth']}, "
        f"patch {record['patch_size']}, {record['img_size']} px; trained on `{source}` |",
        f"| feature layer | {spec['encoder']['feature_layer']} (0 = the last block) |",
        f"| part head | softmax over {head.get('softmax_over')}, similarity {head.get('similarity')}, "
        f"projection {head.get('proj_dim')} |",
        f"| training | `semmae parts train`, {spec.get('epoch')} epochs on `{config.get('data', 'unknown')}` |",
        f"| checkpoint | `{checkpoint}` |",
    ]
    if metric_lines:
        lines += ["", "Last epoch's training metrics:", "", "| metric | value |", "|---|---|", *metric_lines]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "semmae parts export --data IMAGES --checkpoint THIS_FOLDER --grid 14 --out IMAGES.parts",
        "```",
        "",
        "## Licence",
        "",
        "The code (semmae) is under the MIT licence. The weights follow the terms of the data they were trained "
        "on (named above) and of the encoder's own weights.",
        "",
    ]
    return "\n".join(lines)
