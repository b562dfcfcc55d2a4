"""The budget of a reproduction grid or campaign: one :class:`Preset` for every run (``benchmarks/repro_presets/``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from semmae.errors import UserError

#: the harness's presets, beside the benchmarks (not installed)
PRESETS = Path(__file__).resolve().parents[1] / "repro_presets"
#: fields that change only how finished pretraining runs are evaluated (a started grid may change them)
EVAL_ONLY = ("eval_crop_pct", "linprobe_blrs")


@dataclass(frozen=True)
class Preset:
    """One budget for every run of the grid."""

    model: str  # registered MAE name (semmae.models.create_model); its patch is the default patch
    img_size: int
    depth: int
    decoder_depth: int
    fine_patch: int  # Table 1's finer patch (paper: 8 at 224 px); enters with ``fg_keep`` of the cells
    fg_keep: float
    train_per_class: int  # 0 = every image
    val_per_class: int
    batch_size: int
    blr: float
    epochs: int  # every grid run
    warmup_epochs: int
    bootstrap_epochs: int  # random-masking MAE that becomes the part encoder
    num_parts: int
    blur_kernel: int
    parts_epochs: int
    linprobe_epochs: int
    eval_batch_size: int
    precision: str
    num_workers: int
    seeds: int
    name: str = ""
    # eval view: Resize(img / crop) + CenterCrop(img); 1.0 = the whole short side
    eval_crop_pct: float = 0.875
    # the fast probe's base learning rates (empty: `semmae linprobe`'s default sweep)
    linprobe_blrs: tuple[float, ...] = ()

    @staticmethod
    def load(name_or_path: str) -> Preset:
        """A packaged preset by name (``cpu``, ``gpu``, ``anchor``, ``smoke``) or a YAML file."""
        import yaml

        path = Path(name_or_path)
        if not path.suffix:
            path = PRESETS / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
            raise UserError(f"no preset {name_or_path!r} (known: {', '.join(known)})")
        raw = yaml.safe_load(path.read_text()) or {}
        unknown = set(raw) - {f.name for f in fields(Preset)}
        if unknown:
            raise UserError(f"preset {path} has unknown keys {sorted(unknown)}")
        if "linprobe_blrs" in raw:
            raw["linprobe_blrs"] = tuple(raw["linprobe_blrs"])
        return Preset(**{**raw, "name": raw.get("name", path.stem)})
