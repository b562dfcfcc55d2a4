"""CLI verbs of part learning (paper Sec. 3.1): ``semmae parts train | export | show | eval``."""

from __future__ import annotations

from semmae.config import add_verb, add_verb_group
from semmae.parts.config import PartsEvalConfig, PartsExportConfig, PartsShowConfig, PartsTrainConfig


def _train(cfg: PartsTrainConfig) -> int:
    from semmae.parts.train import train_parts

    path = train_parts(cfg)
    print(f"part checkpoint: {path}")
    return 0


def _export(cfg: PartsExportConfig) -> int:
    from semmae.parts.export import export_parts

    cache = export_parts(cfg)
    print(
        f"part cache: {cache.path} ({len(cache)} images, grid {cache.grid}, {cache.num_parts} parts, "
        f"{cache.bytes_per_image} bytes/image)"
    )
    return 0


def _show(cfg: PartsShowConfig) -> int:
    from semmae.parts.show import show_parts

    print(f"wrote {show_parts(cfg)}")
    return 0


def _eval(cfg: PartsEvalConfig) -> int:
    from semmae.parts.evaluate import evaluate_parts, format_table

    metrics = evaluate_parts(cfg)
    print(format_table(metrics))
    for note in metrics["meta"]["notes"]:
        print(f"note: {note}")
    print(f"wrote {metrics['meta']['written_to']}")
    return 0


VERBS = (
    (
        "train",
        PartsTrainConfig,
        _train,
        "Train part tokens + decoder on a frozen encoder (Sec. 3.1, Eq. 1-7)",
        "semmae parts train --data DIR --encoder-checkpoint ibot.pth --out runs/parts",
    ),
    (
        "export",
        PartsExportConfig,
        _export,
        "Write the part-map cache (argmax part + foreground score per cell): learned parts, or with --source "
        "attention the raw-attention parts of an encoder (Table 4's baseline)",
        "semmae parts export --data DIR --checkpoint runs/parts/checkpoint.pth --grid 14 --out DIR.parts; "
        "semmae parts export --source attention --data DIR --encoder-checkpoint ibot.pth --out DIR.attn.parts",
    ),
    (
        "show",
        PartsShowConfig,
        _show,
        "Draw part overlays next to raw-attention parts (PNG grid)",
        "semmae parts show --data DIR --checkpoint runs/parts/checkpoint.pth --out parts.png",
    ),
    (
        "eval",
        PartsEvalConfig,
        _eval,
        "Score parts against label masks or keypoints, with baselines",
        "semmae parts eval --data DIR/val --cache val.parts --masks DIR/masks/val",
    ),
)


def register(sub) -> None:
    actions = add_verb_group(sub, "parts", "Semantic part learning (paper Sec. 3.1, Eq. 1-7)")
    for name, cls, func, help_text, example in VERBS:
        add_verb(actions, name, cls, func, help_text, f"{help_text}. Example: {example}")
