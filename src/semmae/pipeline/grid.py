"""The reproduction grid: every pretraining configuration of the paper's Tables 1, 3 and 4 (and the flip-only
augmentation) at small scale, and the table rows each fills (``benchmarks/repro.py``).

Identical configurations run once and fill every table that holds them (random = MAE = no parts; adaptive
gamma 2 = SemMAE = learned parts).
"""

from __future__ import annotations

from dataclasses import dataclass

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


GRID: tuple[GridConfig, ...] = (
    GridConfig(
        "random",
        "random",
        rows=(
            ("table3", "random"),
            ("table1", "MAE, patch P"),
            ("table4", "no parts (random masking)"),
            ("anchor", "MAE (random masking)"),
        ),
    ),
    GridConfig("per_part", "per-part", parts="learned", rows=(("table3", "per-part (alpha = 0)"),)),
    GridConfig("whole_part", "whole-part", parts="learned", rows=(("table3", "whole-part (alpha = 1)"),)),
    GridConfig(
        "adaptive_rev_g1",
        "adaptive-reverse",
        gamma=1.0,
        parts="learned",
        rows=(("table3", "adaptive 1 -> 0 (gamma = 1)"),),
    ),
    GridConfig(
        "adaptive_g1",
        "adaptive",
        gamma=1.0,
        parts="learned",
        rows=(("table3", "adaptive 0 -> 1 (gamma = 1)"),),
    ),
    GridConfig(
        "adaptive_g2",
        "adaptive",
        gamma=2.0,
        parts="learned",
        rows=(
            ("table3", "adaptive 0 -> 1 (gamma = 2)"),
            ("table1", "SemMAE, patch P"),
            ("table4", "learned parts (SemMAE)"),
        ),
    ),
    GridConfig(
        "adaptive_g3",
        "adaptive",
        gamma=3.0,
        parts="learned",
        rows=(("table3", "adaptive 0 -> 1 (gamma = 3)"),),
    ),
    GridConfig("mae_fine", "random", parts="learned", fine=True, rows=(("table1", "MAE, patch P/2 + keep"),)),
    GridConfig(
        "semmae_fine",
        "adaptive",
        gamma=2.0,
        parts="learned",
        fine=True,
        rows=(("table1", "SemMAE, patch P/2 + keep"),),
    ),
    GridConfig(
        "attention_g2", "adaptive", gamma=2.0, parts="attention", rows=(("table4", "raw-attention parts"),)
    ),
    # the paper's augmentation (Sec. 4.1: "only random horizontal flipping"): not in the default grid
    GridConfig("random_flip", "random", augment="flip", rows=(("flip", "random, flip only"),)),
    GridConfig(
        "adaptive_g2_flip",
        "adaptive",
        gamma=2.0,
        parts="learned",
        augment="flip",
        rows=(("flip", "adaptive 0 -> 1 (gamma = 2), flip only"),),
    ),
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
