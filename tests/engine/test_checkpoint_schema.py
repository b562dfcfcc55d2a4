"""The one checkpoint schema (issue 41): TrainState round trips, every older layout is upgraded on read, and no
module of ``src/semmae`` but the schema indexes a checkpoint by its key names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from semmae.engine.checkpoint import find_resume, load_pretrain_checkpoint, read_stage_checkpoint
from semmae.errors import UserError
from semmae.models.checkpoint_schema import (
    FIELD_KEYS,
    SCHEMA_VERSION,
    TrainState,
    read_train_state,
    upgrade,
)
from semmae.models.encoder_record import EncoderRecord

SRC = Path(__file__).resolve().parents[2] / "src" / "semmae"
CFG = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
RECORD = EncoderRecord(**CFG, name="mae_vit_micro_patch8", fg_keep=0.25)
MAE_CONFIG = {**CFG, "name": "mae_vit_micro_patch8", "decoder_depth": 1, "decoder_embed_dim": 16}
W = {"w": torch.arange(4.0)}


# ------------------------------------------------------------------------------- the layouts the old code wrote
def old_pretrain(kind: bool = True, encoder: bool = True) -> dict:
    """``StepTrainer.checkpoint`` + ``PretrainTrainer.model_state`` before the schema (``kind``: since issue 27,
    ``encoder``: since the encoder record)."""
    out = {"kind": "pretrain"} if kind else {}
    out |= {"model": W, "model_config": MAE_CONFIG}
    if encoder:
        out["encoder"] = RECORD.to_dict()
    sampler = {"epoch": 1, "step_in_epoch": 0, "seed": 0, "effective_batch": 8, "steps_per_epoch": 2}
    out |= {"optimizer": {"state": {}, "param_groups": []}, "scaler": {}, "epoch": 1, "step": 2}
    return out | {
        "config": {"seed": 0, "fg_keep": 0.25},
        "rng": [{"torch": torch.zeros(3)}],
        "sampler": sampler,
    }


def old_epoch_stage(kind: str = "finetune") -> dict:
    """``EpochTrainer.checkpoint`` before the schema (finetune's entries)."""
    return {
        "kind": kind,
        "config": {"seed": 0},
        "encoder": RECORD.to_dict(),
        "model": W,
        "ema": None,
        "optimizer": {"state": {}, "param_groups": []},
        "scaler": {},
        "step": 4,
        "epoch": 1,
        "step_in_epoch": 1,
        "partial": {"loss": 1.5},
        "loader_rng": torch.zeros(2, dtype=torch.uint8),
        "rng": {"torch": torch.zeros(3)},
        "rng_at_stop": {"torch": torch.ones(3)},
        "best": {"top1": 0.0, "top5": 0.0, "epoch": -1},
    }


def old_finetune_best() -> dict:
    """``FinetuneTrainer.epoch_end``'s ``best.pth`` before the schema."""
    return {
        "kind": "finetune",
        "model": W,
        "step": 4,
        "epoch": 2,
        "metrics": {"top1": 1.0},
        "encoder": RECORD.to_dict(),
        "classes": ["a", "b"],
    }


def old_segment_final() -> dict:
    """``SegmentTrainer.end_run``'s ``seg_final.pth`` before the schema."""
    source = {"checkpoint": "x.pth", "layout": "semmae_pretrain", "random_init": False}
    return {
        "kind": "segment",
        "config": {"seed": 0},
        "encoder": RECORD.to_dict(),
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "encoder_source": source,
        "model": W,
        "step": 8,
    }


def test_a_train_state_round_trips_through_its_file_layout(tmp_path):
    state = TrainState(
        kind="finetune",
        model=W,
        encoder=RECORD,
        optimizer={"state": {}, "param_groups": []},
        scaler={},
        step=4,
        epoch=1,
        config={"seed": 0},
        rng={"torch": torch.zeros(3)},
        extra={"step_in_epoch": 0, "best": {"top1": 1.0}},
    )
    raw = state.to_dict()
    assert raw["schema_version"] == SCHEMA_VERSION and raw["encoder"] == RECORD.to_dict()
    torch.save(raw, tmp_path / "c.pth")
    back = read_train_state(tmp_path / "c.pth", expect_kind="finetune")
    assert back.encoder == RECORD and back.extra == state.extra and back.step == 4
    assert torch.equal(back.model["w"], W["w"]) and back.to_dict().keys() == raw.keys()
    with pytest.raises(ValueError, match="schema key"):
        TrainState(kind="x", extra={"model": {}}).to_dict()


@pytest.mark.parametrize(
    "old",
    [
        old_pretrain(),
        old_epoch_stage(),
        old_epoch_stage("linprobe"),
        old_finetune_best(),
        old_segment_final(),
    ],
)
def test_a_file_of_the_current_layout_reads_and_writes_back_unchanged(old):
    """File compatibility both ways: what the old code wrote is what the new code writes (plus the version)."""
    again = TrainState.from_dict(old).to_dict()
    assert again.pop("schema_version") == SCHEMA_VERSION
    assert again.keys() == old.keys()
    assert all(again[k] is old[k] or again[k] == old[k] for k in old if not isinstance(old[k], torch.Tensor))


def test_every_older_layout_is_upgraded_on_read(tmp_path):
    # pretrain / bootstrap before the encoder entry: the record from model_config + config["fg_keep"]
    pre = TrainState.from_dict(old_pretrain(kind=False, encoder=False))
    assert pre.encoder == RECORD and pre.kind is None and pre.model_config == MAE_CONFIG
    torch.save(old_pretrain(kind=False, encoder=False), tmp_path / "pre.pth")
    assert read_stage_checkpoint(tmp_path / "pre.pth", "pretrain").encoder == RECORD  # resumes as before
    assert load_pretrain_checkpoint(tmp_path / "pre.pth").encoder == RECORD  # and exports
    # segment train before the one layout: the spec is the record, the rest where the encoder came from
    spec = RECORD.replace(global_pool="avg").arch()
    seg = TrainState.from_dict(
        {"config": {}, "encoder": {"spec": spec, "layout": "timm", "random_init": False}}
    )
    assert seg.encoder == EncoderRecord(**spec)
    assert seg.extra["encoder_source"] == {"layout": "timm", "random_init": False}
    # finetune's best.pth before the one layout
    best = TrainState.from_dict({"model": W, "encoder_spec": spec, "epoch": 3})
    assert best.encoder == EncoderRecord(**spec) and "encoder_spec" not in best.extra
    # parts train, version 1
    v1 = {"format": "semmae-parts", "version": 1, "encoder": {"arch": "vit_tiny_patch16_224", "img_size": 32}}
    v1 |= {"model": W, "optimizer": {}, "config": {}, "epoch": 1, "step": 4, "rng": None, "batches_rng": 7}
    parts = TrainState.from_dict(v1)
    assert parts.kind == "parts" and parts.encoder is None and parts.scaler == {}
    assert parts.extra["frozen_encoder"] == v1["encoder"] and parts.extra["loader_rng"] == 7
    assert parts.extra["version"] == 2 and parts.extra["step_in_epoch"] == 0
    # upgrade leaves its input untouched and is idempotent
    assert v1["encoder"] == {"arch": "vit_tiny_patch16_224", "img_size": 32}
    assert upgrade(upgrade(v1)) == upgrade(v1)


def test_a_newer_schema_or_a_foreign_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="schema version 99"):
        TrainState.from_dict({**old_epoch_stage(), "schema_version": 99})
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="not a semmae training checkpoint"):
        read_train_state(tmp_path / "list.pth", expect_kind="finetune")


def test_resume_takes_an_old_layout_file(tmp_path):
    from semmae.engine.checkpoint import CheckpointManager

    mgr = CheckpointManager(tmp_path, single="checkpoint.pth")
    torch.save(old_epoch_stage(), tmp_path / "checkpoint.pth")
    path, state = find_resume("auto", mgr, "finetune")
    assert (
        state.extra["best"]["epoch"] == -1 and state.extra["step_in_epoch"] == 1 and state.encoder == RECORD
    )


# ------------------------------------------------------------------------------------------ the source scan
#: the key names that only a checkpoint has (the generic ones, "kind", "step", "epoch", "config", "rng", are also
#: keys of log records, results and run files: they are scanned only on the names checkpoints go by, below)
CHECKPOINT_ONLY = {"model", "model_config", "encoder", "optimizer", "scaler", "schema_version", "sampler"}
CHECKPOINT_ONLY |= {"encoder_spec"}  # finetune's best.pth before the schema
#: names that hold a loaded checkpoint dict in this code base
CHECKPOINT_NAMES = {
    "ckpt",
    "checkpoint",
    "state",
    "raw",
    "obj",
    "saved",
    "final",
    "best",
    "old",
    "data",
    "loaded",
}
#: (file under src/semmae, the expression) -> why it is not a checkpoint of the schema
EXCEPTIONS = {
    ("models/encoder_loading.py", "obj.get('model')"): "an official MAE release ({'model', 'args'}): foreign",
    ("models/encoder_loading.py", "obj['model']"): "an official MAE release: foreign, its own adapter",
    ("models/encoder_loading.py", "args['model']"): "the argparse args of an MAE release: foreign",
    ("models/encoder_loading.py", "meta['model_config']"): "the metadata entry of a safetensors export",
    ("export/model_card.py", "producer.get('encoder')"): "a part cache's producer record (meta.json)",
    ("export/part_learner.py", "spec['encoder']"): "a part-learner export's parts.json",
    (
        "export/encoder.py",
        "entry.get('encoder')",
    ): "the `semmae` entry of a timm folder's config.json (an export)",
    ("parts/checkpoint.py", "spec['encoder']"): "a part-learner export's parts.json",
    ("utils/ownership.py", "raw['kind']"): "a run folder's ownership marker (.semmae-run), not a checkpoint",
}


def _key_uses(tree: ast.AST):
    """(target, key, expression) of each ``x["key"]`` and ``x.get/pop/setdefault("key", ...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            yield node.value, node.slice.value, node
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield node.func.value, node.args[0].value, node


def test_no_module_but_the_schema_indexes_a_checkpoint_by_its_keys():
    found, used = [], set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "models/checkpoint_schema.py":
            continue
        for target, key, node in _key_uses(ast.parse(path.read_text())):
            on_checkpoint = (
                key in FIELD_KEYS and isinstance(target, ast.Name) and target.id in CHECKPOINT_NAMES
            )
            if key not in CHECKPOINT_ONLY and not on_checkpoint:
                continue
            expr = ast.unparse(node)
            if (rel, expr) in EXCEPTIONS:
                used.add((rel, expr))
                continue
            found.append(f"{rel}:{node.lineno}: {expr}")
    assert found == [], (
        "checkpoint keys outside semmae.models.checkpoint_schema (use TrainState):\n" + "\n".join(found)
    )
    assert used == set(EXCEPTIONS), f"stale exceptions: {set(EXCEPTIONS) - used}"
