"""Initialisations of an untrained encoder (the "random init" baseline of every table).

The honest baseline for a pretrained encoder is the same network at the start of its own pretraining. MAE-family
pretraining (this package, facebookresearch/mae, the official SemMAE) starts from MAE's init - Linear and the
flattened patch projection xavier-uniform, class token N(0, 0.02), LayerNorm 1/0 and a *fixed 2-D sin-cos position
table* - while a fresh timm ``VisionTransformer`` draws truncated-normal(0.02) weights and a random learned position
table. The two differ in what a frozen probe can read (no positions at all in timm's); issue 9's anchor measured
the MAE-init encoder. The initialisers themselves are in :mod:`semmae.models.mae_init`; this module is the
``--init`` option and its resolution (no torch, so that ``semmae <verb> --help`` stays fast).
"""

from __future__ import annotations

from typing import Any

from semmae.config import option

INIT_SCHEMES = ("auto", "mae", "timm")
#: checkpoint layouts whose pretraining starts from MAE's init ("auto" picks "mae" for them)
MAE_FAMILY_LAYOUTS = ("semmae_pretrain", "mae_release")


def init_scheme_field() -> Any:
    """The ``--init`` option of every command that can build a random-init baseline."""
    return option(
        "auto",
        "with --random-init: mae = MAE's init (xavier, fixed sin-cos positions: where MAE/SemMAE "
        "pretraining starts), timm = timm's default, auto = mae for MAE-family checkpoints, else timm",
        choices=INIT_SCHEMES,
    )


def resolve_init_scheme(scheme: str, layout: str | None) -> str:
    """``auto`` -> ``mae`` for a checkpoint of an MAE-family layout, else ``timm``."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {INIT_SCHEMES}")
    if scheme != "auto":
        return scheme
    return "mae" if layout in MAE_FAMILY_LAYOUTS else "timm"
