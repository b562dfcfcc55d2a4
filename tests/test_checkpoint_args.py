"""Issue 29: a checkpoint argument is a file or a run folder everywhere - every ``--checkpoint`` /
``--encoder-checkpoint`` of the CLI and the Python loaders - read by one function, ``checkpoint_file``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _helpers import pretrain_checkpoint

from semmae.cli import config_verbs
from semmae.config import resolve_config
from semmae.errors import UserError
from semmae.utils.io import checkpoint_file


def _checkpoint_fields():
    out = []
    for name, verb in sorted(config_verbs().items()):
        for f in dataclasses.fields(verb.config):
            if "checkpoint" in f.name and f.name != "ckpt_every":
                out.append((name, f))
    return out


CHECKPOINT_FIELDS = _checkpoint_fields()


def test_the_checkpoint_options_are_found():
    found = {(verb, f.name) for verb, f in CHECKPOINT_FIELDS}
    for case in (
        ("parts train", "encoder_checkpoint"),
        ("parts export", "checkpoint"),
        ("parts export", "encoder_checkpoint"),
        ("parts show", "checkpoint"),
        ("parts eval", "checkpoint"),
        ("knn", "checkpoint"),
        ("linprobe", "checkpoint"),
        ("finetune", "checkpoint"),
        ("segment train", "checkpoint"),
        ("segment eval", "checkpoint"),
        ("demo", "encoder_checkpoint"),
    ):
        assert case in found, case


@pytest.fixture
def pretrain_run(tmp_path):
    """A pretraining run folder: checkpoints/ckpt-*.pth and the latest pointer (the older file is not latest)."""
    ckpts = tmp_path / "runs" / "mae" / "checkpoints"
    ckpts.mkdir(parents=True)
    for step in (2, 4):
        torch.save({"step": step}, ckpts / f"ckpt-{step:09d}.pth")
    (ckpts / "latest").write_text("ckpt-000000004.pth\n")
    return ckpts.parent


def test_checkpoint_file_reads_every_run_folder_layout(tmp_path, pretrain_run):
    latest = pretrain_run / "checkpoints" / "ckpt-000000004.pth"
    assert checkpoint_file(pretrain_run) == latest
    assert checkpoint_file(pretrain_run / "checkpoints") == latest
    assert checkpoint_file(latest) == latest
    for names, want in (
        (("checkpoint.pth",), "checkpoint.pth"),  # parts train, linprobe, finetune, segment train (running)
        (("checkpoint.pth", "seg_final.pth"), "seg_final.pth"),  # segment train, finished
    ):
        run = tmp_path / "-".join(names)
        run.mkdir()
        for n in names:
            torch.save({}, run / n)
        assert checkpoint_file(run) == run / want
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is a folder without a checkpoint") as e:
        checkpoint_file(tmp_path / "empty")
    assert "\n" not in str(e.value)
    assert checkpoint_file(tmp_path / "missing.pth") == tmp_path / "missing.pth"  # its loader says so


@pytest.mark.parametrize(
    "verb,field", CHECKPOINT_FIELDS, ids=[f"{v} --{f.name}" for v, f in CHECKPOINT_FIELDS]
)
def test_every_checkpoint_option_takes_a_run_folder(verb, field, pretrain_run, monkeypatch):
    """The config records the file the run reads (``parts train --encoder-checkpoint runs/mae`` used to fail
    with 'is a directory')."""
    assert field.metadata.get("checkpoint"), f"{verb} --{field.name} is not resolved by checkpoint_file"
    cls = config_verbs()[verb].config
    monkeypatch.setattr(cls, "validate", lambda self: None)  # only the resolution is under test here
    cfg = resolve_config(cls, {field.name: str(pretrain_run)})
    assert getattr(cfg, field.name) == str(pretrain_run / "checkpoints" / "ckpt-000000004.pth")


def test_python_loaders_take_a_run_folder(tmp_path):
    from semmae.export.encoder import export_encoder
    from semmae.models import create_model
    from semmae.models.encoder_loading import load_encoder
    from semmae.utils.io import load_checkpoint

    torch.manual_seed(0)
    mae = create_model("mae_vit_micro_patch8")
    run = tmp_path / "runs" / "semmae"
    (run / "checkpoints").mkdir(parents=True)
    pretrain_checkpoint(run / "checkpoints" / "ckpt-000000004.pth", mae)
    (run / "checkpoints" / "latest").write_text("ckpt-000000004.pth\n")
    loaded = load_encoder(run)
    assert loaded.checkpoint == str(run / "checkpoints" / "ckpt-000000004.pth")
    assert load_checkpoint(run)["step"] == 4
    assert export_encoder(run, tmp_path / "enc.safetensors").is_file()
    part_run = tmp_path / "runs" / "parts"
    part_run.mkdir()
    torch.save({"format": "not-parts"}, part_run / "checkpoint.pth")
    from semmae.parts.checkpoint import read_part_checkpoint

    with pytest.raises(UserError, match=f"{part_run / 'checkpoint.pth'} is not a part checkpoint"):
        read_part_checkpoint(part_run)  # the folder was read as its checkpoint.pth
