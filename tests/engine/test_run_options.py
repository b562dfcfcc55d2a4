"""The run options every stage spells the same way: --resume auto|none|PATH, --overwrite, --precision."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from semmae.bootstrap.config import BootstrapConfig
from semmae.engine.checkpoint import CheckpointManager, resume_path
from semmae.engine.config import PretrainConfig
from semmae.engine.precision import resolve_precision
from semmae.engine.run_options import PRECISIONS, check_resume_overwrite, resume_mode
from semmae.errors import UserError
from semmae.eval.config import FinetuneConfig, LinprobeConfig
from semmae.eval.segmentation.config import SegmentTrainConfig
from semmae.parts.config import PartsExportConfig, PartsTrainConfig


@pytest.mark.parametrize("value", [None, "", "none", "None", "no", "false", "0"])
def test_resume_none_spellings_start_fresh(value, tmp_path):
    assert resume_mode(value) is None
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    assert resume_path(value, CheckpointManager(tmp_path, single="checkpoint.pth")) is None


def test_resume_auto_and_path(tmp_path):
    """The one resume resolver, with a stage's one checkpoint file (epoch stages)."""
    one = CheckpointManager(tmp_path, single="checkpoint.pth")
    default = tmp_path / "checkpoint.pth"
    assert resume_mode("AUTO") == "auto"
    assert resume_path("auto", one) is None  # nothing to continue: a fresh start
    default.write_bytes(b"x")
    assert resume_path("auto", one) == default
    other = tmp_path / "elsewhere.pth"
    with pytest.raises(UserError, match="no such checkpoint"):
        resume_path(str(other), one)
    other.write_bytes(b"y")
    assert resume_path(str(other), one) == other
    assert resume_path(str(tmp_path), one) == default  # a run folder means its checkpoint file
    (tmp_path / "seg_final.pth").write_bytes(b"z")  # a run folder's final file is not what a resume continues
    assert resume_path(str(tmp_path), one) == default


def test_resume_path_with_overwrite_is_refused():
    check_resume_overwrite("auto", True)
    check_resume_overwrite(None, True)
    with pytest.raises(UserError, match="--overwrite deletes it"):
        check_resume_overwrite("runs/x/checkpoint.pth", True)


STAGES = [
    PretrainConfig,
    BootstrapConfig,
    PartsTrainConfig,
    PartsExportConfig,
    LinprobeConfig,
    FinetuneConfig,
]


@pytest.mark.parametrize("cls", [*STAGES, SegmentTrainConfig])
def test_every_stage_spells_precision_the_same_way(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert "amp" not in fields
    assert fields["precision"].default == "auto"
    assert tuple(fields["precision"].metadata["choices"]) == PRECISIONS


@pytest.mark.parametrize(
    "cls", [PretrainConfig, BootstrapConfig, PartsTrainConfig, LinprobeConfig, FinetuneConfig]
)
def test_every_training_stage_spells_resume_the_same_way(cls):
    f = {f.name: f for f in dataclasses.fields(cls)}["resume"]
    assert f.type in ("str | None", str | None)
    assert (
        f.metadata["help"]
        == {g.name: g for g in dataclasses.fields(PretrainConfig)}["resume"].metadata["help"]
    )


def test_auto_precision_is_fp32_on_the_cpu_and_bf16_only_when_asked():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).name == "bf16"


@pytest.mark.parametrize(
    "capability, want", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_precision_is_fp16_on_pre_ampere_gpus_not_emulated_bf16(capability, want, monkeypatch):
    # V100 (7.0) / T4 (7.5) "support" bf16 by emulation (torch.cuda.is_bf16_supported() says True): auto must
    # still pick fp16 + grad scaler there, and bf16 only where it is native (8.0+)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    p = resolve_precision("auto", torch.device("cuda", 0))
    assert (p.name, p.needs_grad_scaler) == (want, want == "fp16")
    if want == "fp16":
        with pytest.raises(UserError, match="does not support bf16"):
            resolve_precision("bf16", torch.device("cuda", 0))


@pytest.mark.parametrize(
    "cls", [PretrainConfig, BootstrapConfig, PartsTrainConfig, LinprobeConfig, FinetuneConfig]
)
def test_every_stage_refuses_a_resume_path_with_overwrite(cls, tmp_path):
    from semmae.config import build_config

    values = {"resume": str(tmp_path / "ckpt.pth"), "overwrite": True, "data": str(tmp_path)}
    if cls in (LinprobeConfig, FinetuneConfig):
        values["random_init"] = True
    with pytest.raises(UserError, match="--overwrite deletes it"):
        build_config(cls, values)


@pytest.mark.parametrize("asked, tf32", [("auto", True), ("fp32", True), ("bf16", False), ("fp16", False)])
def test_tf32_is_allowed_on_cuda_for_auto_and_fp32(asked, tf32, monkeypatch):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        resolve_precision(asked, torch.device("cuda", 0))
        assert (torch.get_float32_matmul_precision() == "high") == tf32
        resolve_precision("auto", torch.device("cpu"))  # the CPU is left alone
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
