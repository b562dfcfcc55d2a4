"""The plan of a pre-registered campaign (``benchmarks/campaigns/<name>.yaml``, :mod:`semmae_lab.campaign`):
its arms, budget, data, seeds, metrics, gate and decision margin, checked on loading.

The contrasts the decision rule decides: by default every arm against ``baseline`` (keyed by the arm); a plan may
instead list them, ``contrasts: [{arm: a, baseline: b}, ...]`` (keyed ``<arm>-vs-<baseline>``), each decided by the
same rule. ``baseline`` is then still the gate's arm (the one that must beat the untrained encoder)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae_lab.grid import GridConfig
from semmae_lab.preset import Preset

PART_SOURCES = ("", "learned", "attention", "masks")
UNTRAINED = "untrained"  # the eval-only arm: the baseline's architecture at its initialisation (gate seed)


@dataclass(frozen=True)
class Arm:
    """One pretraining configuration of the campaign (a row of ``arms:`` in the plan)."""

    key: str
    masking: str  # semmae.masking.build_masking name
    gamma: float = 2.0
    parts: str = ""  # part cache feeding the masking (and the foreground keep): learned | attention | masks
    fine: bool = False  # the preset's fine patch + keep the most-foreground fg_keep of the cells
    augment: str = "crop-flip"
    label: str = ""
    # the adaptive schedules' cap, alpha = alpha_max x progress ** gamma (`semmae pretrain --alpha-max`; 1 = paper)
    alpha_max: float = 1.0

    def grid_config(self) -> GridConfig:
        return GridConfig(self.key, self.masking, self.gamma, self.parts, self.fine, self.augment, rows=())


@dataclass(frozen=True)
class Contrast:
    """One decided comparison: ``arm`` - ``baseline``, paired by seed (a row of ``contrasts:`` in the plan)."""

    arm: str
    baseline: str


@dataclass(frozen=True)
class Plan:
    """A pre-registered campaign (``benchmarks/campaigns/<name>.yaml``); see the module docstring."""

    name: str
    question: str
    budget: dict[str, Any]  # Preset fields (``seeds`` is taken from ``seeds`` below)
    # {kind: folder, path, [masks]} or {kind: synth, num_images, size, style, seed, val_fraction}; ``masks``: a
    # folder of ground-truth label PNGs mirroring ``path`` (<masks>/{train,val}/<class>/<stem>.png) for oracle arms
    data: dict[str, Any]
    arms: tuple[Arm, ...]
    baseline: str
    seeds: int
    primary: str  # a record metric, e.g. logreg_top1; "kept.<metric>" reads the kept-quarter evaluation
    first_seed: int = 0
    secondary: tuple[str, ...] = ()
    gate_metrics: tuple[str, ...] = ("logreg_top1", "knn_top1")
    gate_min_gain: float = 4.0
    gate_converged_probes: bool = True  # the gate also needs every probe converged (not on a sweep edge)
    alpha: float = 0.05
    margin: float = 1.0  # equivalence margin, metric points
    paper_effect: float | None = None  # the paper's gain, for the size comparison in the decision
    notes: str = ""
    # the decided comparisons; empty: every arm against ``baseline`` (the plans before issue 40)
    contrasts: tuple[Contrast, ...] = ()
    path: str = ""

    @staticmethod
    def load(path: str | Path) -> Plan:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise UserError(f"no plan file {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in fields(Plan)} - {"path"}
        unknown = set(raw) - known
        if unknown:
            raise UserError(f"plan {path} has unknown keys {sorted(unknown)}")
        arms = tuple(_row(Arm, a, path, "arms") for a in raw.pop("arms", ()))
        if "contrasts" in raw:
            raw["contrasts"] = tuple(_row(Contrast, c, path, "contrasts") for c in raw["contrasts"] or ())
        for key in ("secondary", "gate_metrics"):
            if key in raw:
                raw[key] = tuple(raw[key])
        plan = Plan(arms=arms, path=str(path.resolve()), **raw)
        plan.check()
        return plan

    def check(self) -> None:
        keys = [a.key for a in self.arms]
        if len(set(keys)) != len(keys) or UNTRAINED in keys:
            raise UserError(f"arm keys must be unique and not {UNTRAINED!r}: {keys}")
        if self.baseline not in keys or len(keys) < 2:
            raise UserError(f"baseline {self.baseline!r} must be one of >= 2 arms {keys}")
        for arm in self.arms:
            if arm.parts not in PART_SOURCES:
                raise UserError(f"arm {arm.key}: parts must be one of {PART_SOURCES}")
            cap = arm.alpha_max
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 < cap <= 1.0:
                raise UserError(f"arm {arm.key}: alpha_max must be a number in (0, 1], got {cap!r}")
            if cap != 1.0 and arm.masking not in ("adaptive", "adaptive-reverse"):
                raise UserError(
                    f"arm {arm.key}: alpha_max caps the adaptive schedules (masking adaptive or adaptive-reverse), "
                    f"not {arm.masking!r}"
                )
        seen = set()
        for con in self.contrasts:
            if con.arm not in keys or con.baseline not in keys or con.arm == con.baseline:
                raise UserError(
                    f"contrast {con.arm} - {con.baseline}: arm and baseline must be two different arms of {keys}"
                )
            if (con.arm, con.baseline) in seen:
                raise UserError(f"contrast {con.arm} - {con.baseline} is listed twice")
            seen.add((con.arm, con.baseline))
        if self.data.get("kind", "folder") not in ("folder", "synth"):
            raise UserError(f"data kind {self.data.get('kind')!r}: expected folder or synth")
        if any(a.parts == "masks" for a in self.arms) and not self.has_masks:
            raise UserError(
                "parts: masks needs ground-truth part masks: data kind synth, or kind folder with "
                "masks: <folder of label PNGs, <masks>/{train,val}/<class>/<stem>.png>"
            )
        if self.seeds < 2:
            raise UserError("a paired campaign needs at least 2 seeds")

    @property
    def has_masks(self) -> bool:
        """Whether the data carries ground-truth part masks (the oracle parts, and the learned parts' scores)."""
        return self.data.get("kind") == "synth" or bool(self.data.get("masks"))

    @property
    def contrast_map(self) -> dict[str, Contrast]:
        """The decided comparisons in plan order, by key: the arm's key for the default (every arm against
        ``baseline``), ``<arm>-vs-<baseline>`` for a plan's ``contrasts:``."""
        if not self.contrasts:
            return {a.key: Contrast(a.key, self.baseline) for a in self.arms if a.key != self.baseline}
        return {f"{c.arm}-vs-{c.baseline}": c for c in self.contrasts}

    @property
    def comparisons(self) -> list[str]:
        """The keys of the decided comparisons (:attr:`contrast_map`)."""
        return list(self.contrast_map)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def preset(self) -> Preset:
        budget = dict(self.budget)
        if "linprobe_blrs" in budget:
            budget["linprobe_blrs"] = tuple(budget["linprobe_blrs"])
        return Preset(**{**budget, "seeds": self.seeds, "name": f"campaign-{self.name}"})

    def arm_order(self, seed: int) -> list[Arm]:
        """The arms of ``seed`` in running order: the plan's order rotated by the seed's index, so each arm goes
        first equally often (two arms: alternating); the gate seed starts with the baseline."""
        arms = sorted(self.arms, key=lambda a: a.key != self.baseline)  # baseline first, then plan order
        shift = (seed - self.first_seed) % len(arms)
        return arms[shift:] + arms[:shift]


def _row(cls, row: Any, path: Path, where: str):
    """One row of ``arms:`` or ``contrasts:`` as ``cls``; an unknown or missing key is refused in one line."""
    if not isinstance(row, dict):
        raise UserError(f"plan {path}: each entry of {where} is a mapping, got {row!r}")
    known = {f.name for f in fields(cls)}
    if set(row) - known:
        raise UserError(f"plan {path}: {where} entry has unknown keys {sorted(set(row) - known)}")
    try:
        return cls(**row)
    except TypeError as e:
        raise UserError(f"plan {path}: {where} entry {row}: {e}") from None


def metric(record: dict[str, Any], name: str) -> float | None:
    """A record's metric; ``kept.<m>`` reads the kept-quarter evaluation."""
    node: Any = record
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else float(node)
