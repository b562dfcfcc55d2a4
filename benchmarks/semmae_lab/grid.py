"""The reproduction grid: every pretraining configuration of the paper's Tables 1, 3 and 4 (and the flip-only
augmentation) at small scale, and the table rows each fills (``benchmarks/repro.py``).

Identical configurations run once and fill every table that holds them (random = MAE = no parts; adaptive
gamma 2 = SemMAE = learned parts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from semmae.errors import UserError

TABLES = ("table1", "table3", "table4", "anchor", "flip")


@dataclass(frozen=True)
class GridConfig:
    """One pretraining configuration and the table rows it fills."""

    key: str
    masking: str  # semmae.masking.build_masking name
    gamma: float = 2.0
    parts: str = ""  # "" (no cache), "learned" or "attention"
    fine: bool = False  # finer patch + keep the most-foreground ``fg_keep`` of the cells
    augment: str = "crop-flip"  # `semmae pretrain --augment`: MAE's crop + flip, or SemMAE's flip only
    rows: tuple[tuple[str, str], ...] = ()  # (table, row label)

    @property
    def tables(self) -> set[str]:
        return {t for t, _ in self.rows}


#: (config key, table, row label): the table rows each configuration fills, in the order its record lists them
ROWS = (
    ("random", "table3", "random"),
    ("random", "table1", "MAE, patch P"),
    ("random", "table4", "no parts (random masking)"),
    ("random", "anchor", "MAE (random masking)"),
    ("per_part", "table3", "per-part (alpha = 0)"),
    ("whole_part", "table3", "whole-part (alpha = 1)"),
    ("adaptive_rev_g1", "table3", "adaptive 1 -> 0 (gamma = 1)"),
    ("adaptive_g1", "table3", "adaptive 0 -> 1 (gamma = 1)"),
    ("adaptive_g2", "table3", "adaptive 0 -> 1 (gamma = 2)"),
    ("adaptive_g2", "table1", "SemMAE, patch P"),
    ("adaptive_g2", "table4", "learned parts (SemMAE)"),
    ("adaptive_g3", "table3", "adaptive 0 -> 1 (gamma = 3)"),
    ("mae_fine", "table1", "MAE, patch P/2 + keep"),
    ("semmae_fine", "table1", "SemMAE, patch P/2 + keep"),
    ("attention_g2", "table4", "raw-attention parts"),
    ("random_flip", "flip", "random, flip only"),
    ("adaptive_g2_flip", "flip", "adaptive 0 -> 1 (gamma = 2), flip only"),
)
_CONFIGS = (
    GridConfig("random", "random"),
    GridConfig("per_part", "per-part", parts="learned"),
    GridConfig("whole_part", "whole-part", parts="learned"),
    GridConfig("adaptive_rev_g1", "adaptive-reverse", gamma=1.0, parts="learned"),
    GridConfig("adaptive_g1", "adaptive", gamma=1.0, parts="learned"),
    GridConfig("adaptive_g2", "adaptive", gamma=2.0, parts="learned"),
    GridConfig("adaptive_g3", "adaptive", gamma=3.0, parts="learned"),
    GridConfig("mae_fine", "random", parts="learned", fine=True),
    GridConfig("semmae_fine", "adaptive", gamma=2.0, parts="learned", fine=True),
    GridConfig("attention_g2", "adaptive", gamma=2.0, parts="attention"),
    # the paper's augmentation (Sec. 4.1: "only random horizontal flipping"): not in the default grid
    GridConfig("random_flip", "random", augment="flip"),
    GridConfig("adaptive_g2_flip", "adaptive", gamma=2.0, parts="learned", augment="flip"),
)
GRID: tuple[GridConfig, ...] = tuple(
    replace(c, rows=tuple((table, label) for key, table, label in ROWS if key == c.key)) for c in _CONFIGS
)
KEPT_METRICS = (
    "knn_top1",
    "knn_top5",
    "linprobe_top1",
    "linprobe_top5",
    "linprobe_best_blr",
    "linprobe_best_on_edge",
    "logreg_top1",
    "logreg_converged",
)
RANDOM_INIT = "random_init"  # eval-only row: the encoder at its initialisation (per seed)


def select_grid(only: list[str] | None) -> list[GridConfig]:
    """Configurations in any table of ``only`` (table names or config keys); all of table 1/3/4 by default."""
    wanted = set(only or ("table1", "table3", "table4"))
    keys = {c.key for c in GRID}
    bad = wanted - keys - set(TABLES)
    if bad:
        raise UserError(f"--only {sorted(bad)}: not a table ({', '.join(TABLES)}) or config key")
    return [c for c in GRID if c.key in wanted or c.tables & wanted]
