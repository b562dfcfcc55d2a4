"""The ``README.md`` model card of an exported encoder, written from its run: the paper, the package, the data, the
training (epochs, masking of paper Sec. 3.2, kept fraction), the part encoder behind the part cache (Sec. 3.1),
the evaluations (``results.json`` of ``semmae knn`` / ``linprobe`` / ``finetune``) found in the run folder, the
licence and a loading snippet. Only what the run records is stated; what it does not record is said to be unknown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semmae.models.timm_dir import PAPER, PAPER_ID

if TYPE_CHECKING:
    from semmae.models.checkpoint_schema import TrainState

PACKAGE = "semmae"
CITATION = """@inproceedings{li2022semmae,
  title     = {SemMAE: Semantic-Guided Masking for Learning Masked Autoencoders},
  author    = {Li, Gang and Zheng, Heliang and Liu, Daqing and Wang, Chaoyue and Su, Bing and Zheng, Changwen},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2022}
}"""
MAX_RESULTS = 20  # results.json files listed at most (newest first)
SEARCH_DEPTH = 3  # folders below the run folder searched for them (RUN/evals/knn/results.json is 2)


def run_folder(checkpoint: Path) -> Path:
    """The run folder of a checkpoint file (``<run>/checkpoints/ckpt-N.pth`` -> ``<run>``)."""
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _top5(result: dict[str, Any]) -> str:
    """Top-5, or why there is none (evaluations of 5 classes or fewer record none: it would be 100 %)."""
    return (
        "n/a (<= 5 classes)" if result.get("top5") is None and "top1" in result else _fmt(result.get("top5"))
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt(x) for x in v)
    return "unknown" if v is None else str(v)


def masking_line(config: dict[str, Any], model_config: dict[str, Any]) -> str:
    """How the pretraining masked: strategy, ratio, the adaptive schedule's gamma, the kept fraction."""
    if model_config.get("trainer") == "bootstrap":
        objective = model_config.get("objective", "ibot")
        masked = f", masked-patch share {_fmt(config.get('mask_ratio'))}" if objective == "ibot" else ""
        return f"self-distillation ({objective}{masked}); no semantic-guided masking"
    if "masking" not in config:
        return "unknown (the checkpoint does not record its configuration)"
    masking = str(config["masking"])
    line = f"{masking}, mask ratio {_fmt(config.get('mask_ratio'))}"
    if masking.startswith("adaptive"):
        line += f", alpha = progress^gamma with gamma {_fmt(config.get('gamma'))} (paper Algorithm 1)"
    keep = config.get("fg_keep", 1.0)
    if keep is not None and float(keep) < 1:
        line += f"; only the {_fmt(float(keep))} most-foreground patches enter the encoder (fg_keep)"
    return line


def part_encoder_line(config: dict[str, Any]) -> str | None:
    """Which encoder made the part cache the masking read (its ``meta.json`` producer), or None without one."""
    parts = config.get("parts")
    if not parts:
        return None
    meta = Path(parts) / "meta.json"
    try:
        producer = json.loads(meta.read_text()).get("producer") or {}
    except (OSError, json.JSONDecodeError):
        return f"part cache `{parts}` (not readable at export time: its producer is unknown)"
    bits = [f"`{producer.get('command', 'unknown command')}`"]
    arch = producer.get("encoder_architecture")
    if isinstance(arch, dict):  # the frozen encoder's sizes, as the part export records them
        named = {"embed_dim": "width", "depth": "depth", "num_heads": "heads", "patch_size": "patch"}
        sizes = ", ".join(f"{word} {arch[key]}" for key, word in named.items() if key in arch)
        arch = f"ViT ({sizes}) at {arch['img_size']} px" if "img_size" in arch else f"ViT ({sizes})"
    if arch:
        bits.append(str(arch))
    encoder = producer.get("encoder") or {}
    source = producer.get("encoder_checkpoint") or encoder.get("checkpoint") or encoder.get("arch")
    if source:
        bits.append(f"encoder `{source}`")
    if producer.get("checkpoint"):
        bits.append(f"part learner `{producer['checkpoint']}`")
    if producer.get("masks"):
        bits.append(f"ground-truth masks `{producer['masks']}`")
    return "; ".join(bits)


def _protocol(result: dict[str, Any]) -> tuple[str, str]:
    """(protocol, its settings) of one ``results.json``."""
    cfg = result.get("config") or {}
    tokens = result.get("tokens", "all")
    if "k" in result:
        return "kNN", f"k {result['k']}, T {_fmt(result.get('temperature'))}, tokens {tokens}"
    if "best_epoch" in result:
        settings = f"{_fmt(cfg.get('epochs'))} epochs, peak lr {_fmt(result.get('peak_lr'))}"
        return "fine-tune", settings + f", best epoch {result['best_epoch']}"
    mode = result.get("mode", "full")
    return (
        "linear probe",
        f"{_fmt(cfg.get('epochs'))} epochs ({mode}), pool {_fmt(cfg.get('pool'))}, tokens {tokens}",
    )


def evaluation_rows(run: Path, checkpoint_sha256: str | None) -> list[str]:
    """Markdown table rows, one per ``results.json`` at most :data:`SEARCH_DEPTH` folders below ``run`` (newest
    first)."""
    found = [p for depth in range(SEARCH_DEPTH + 1) for p in run.glob("*/" * depth + "results.json")]
    found = sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_RESULTS]
    rows = []
    for path in found:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(result, dict) or "top1" not in result:
            continue
        protocol, settings = _protocol(result)
        cfg = result.get("config") or {}
        data = cfg.get("val") or cfg.get("data") or "unknown"
        ckpt = result.get("checkpoint")
        which = (
            "this checkpoint"
            if checkpoint_sha256 and result.get("checkpoint_sha256") == checkpoint_sha256
            else (
                f"`{Path(ckpt).name}`"
                if ckpt
                else ("random init" if result.get("random_init") else "unknown")
            )
        )
        rel = path.relative_to(run).parent
        rows.append(
            f"| {protocol} | {_fmt(result.get('top1'))} | {_top5(result)} | {settings} | `{data}` | "
            f"{which} | `{rel}` |"
        )
    return rows


def _kind(config: dict[str, Any], bootstrap: bool) -> str:
    if bootstrap:
        return "iBOT/DINO bootstrap"
    masking = config.get("masking")
    if masking is None:
        return "MAE-family"
    return "MAE (random-masking baseline)" if masking in ("random", "block") else "SemMAE"


def encoder_card(
    facts: dict[str, Any],
    ckpt: TrainState,
    checkpoint: Path,
    weights: dict[str, Any],
    repo: str | None = None,
) -> str:
    """The model card (markdown with Hugging Face front matter) of the encoder exported from ``checkpoint`` (its
    content ``ckpt``; ``facts``: its encoder record as :meth:`EncoderRecord.export_facts` gives it; ``weights``: the
    encoder's state dict)."""
    from semmae.utils.io import sha256_file

    record = facts["record"]
    architecture = facts["timm_architecture"]
    num_params = sum(v.numel() for v in weights.values())

    config = ckpt.config or {}
    model_config = ckpt.model_config or {}
    run = run_folder(checkpoint)
    bootstrap = model_config.get("trainer") == "bootstrap"
    verb = "semmae bootstrap" if bootstrap else "semmae pretrain"
    data = config.get("data") or "unknown"
    name = record["name"] or facts["timm_name"]
    load = f"hf-hub:{repo}" if repo else "local-dir:PATH_TO_THIS_FOLDER"
    # only a run folder (<run>/checkpoints/ckpt-N.pth) is searched, never whatever folder holds a loose file
    in_run = Path(checkpoint).resolve().parent.name == "checkpoints"
    rows = evaluation_rows(run, sha256_file(checkpoint)) if in_run else []
    lines = [
        "---",
        "library_name: timm",
        "license: other",
        "license_name: weights-follow-the-training-data",
        "tags: [image-feature-extraction, timm, semmae, masked-image-modeling]",
        "---",
        "",
        f"# {name} ({_kind(config, bootstrap)} encoder, {facts['timm_name']})",
        "",
        f"A ViT encoder trained with the `{PACKAGE}` package, an implementation of *{PAPER}*, {PAPER_ID}. "
        "Exported with `semmae export`: timm `VisionTransformer` weights (`model.safetensors`), a timm "
        "`config.json`, and this card.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | ViT: width {record['embed_dim']}, depth {record['depth']}, {record['num_heads']} heads, "
        f"patch {record['patch_size']}, MLP ratio {_fmt(record['mlp_ratio'])}, pooling `{record['global_pool']}` |",
        f"| timm build | `{architecture}` with `model_args` from `config.json` (the real sizes) |",
        f"| parameters | {num_params / 1e6:.2f} M |",
        f"| image size | {record['img_size']} px ({facts['grid']}x{facts['grid']} patches), ImageNet mean/std |",
        f"| trained by | `{verb}`, {_fmt(config.get('epochs'))} epochs planned, "
        f"{_fmt(ckpt.epoch)} done ({_fmt(ckpt.step)} optimiser steps) |",
        f"| training data | `{data}` |",
        f"| masking | {masking_line(config, model_config)} |",
    ]
    part_line = part_encoder_line(config)
    if part_line:
        lines.append(f"| part cache (paper Sec. 3.1) | {part_line} |")
    lines.append(f"| checkpoint | `{checkpoint}` |")
    lines += ["", "## Evaluation", ""]
    if rows:
        lines += [
            f"`results.json` files found under the run folder `{run}` (newest first):",
            "",
            "| protocol | top-1 | top-5 | settings | evaluated on | checkpoint | folder |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    elif in_run:
        lines.append(
            f"No `results.json` under the run folder `{run}`: run `semmae knn` / `semmae linprobe` / "
            "`semmae finetune` with `--out` inside the run folder before exporting to have them listed here."
        )
    else:
        lines.append("Not recorded: the checkpoint was exported from a file outside a run folder.")
    if record["fg_keep"] is not None and record["fg_keep"] < 1:
        lines += [
            "",
            f"This encoder was pretrained on the {_fmt(record['fg_keep'])} most-foreground patches of each image "
            "(the paper's ViT-B/8 setting); semmae's evaluations feed it the same kept fraction "
            "(`semmae.eval.kept_tokens`). timm runs it on all patches.",
        ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import timm, torch",
        "from PIL import Image",
        "",
        f'model = timm.create_model("{load}", pretrained=True).eval()',
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        'image = transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0)',
        "with torch.no_grad():",
        f"    features = model(image)  # [1, {record['embed_dim']}]: the pooled features (no classifier head)",
        "```",
        "",
        "With semmae installed, `semmae.models.encoder_loading.load_encoder(FOLDER)` reads this folder too "
        "(and `semmae knn / linprobe / finetune --checkpoint FOLDER`).",
        "",
        "## Licence",
        "",
        "The code (semmae) is under the MIT licence. The weights were trained on the data named above and follow "
        "that data's terms of use (ImageNet, for example, allows non-commercial research only): check them "
        "before using or redistributing the weights.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)
