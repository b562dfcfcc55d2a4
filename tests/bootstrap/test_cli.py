"""In-process and subprocess `semmae bootstrap` runs on a micro ViT: records, plain-data checkpoints that every
encoder consumer accepts, exact resume after SIGKILL, one-line errors."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from _helpers import logged_losses, run_killed_at

from semmae.bootstrap.config import BootstrapConfig
from semmae.cli import main
from semmae.config import resolve_config
from semmae.engine.checkpoint import CheckpointManager
from semmae.models.encoder_loading import load_encoder
from semmae.models.vit_ops import encoder_tokens
from semmae.utils.run_logger import read_log


@pytest.fixture(scope="module")
def boot_run(tmp_path_factory, boot_images, boot_args):
    out = tmp_path_factory.mktemp("bootrun")
    argv = boot_args(boot_images, out, "--epochs", "2", "--ckpt-every", "3", "--keep-last", "2")
    argv += ["--eval-every", "1", "--eval-train", str(boot_images), "--eval-val", str(boot_images)]
    assert main(argv) == 0
    return out


def test_run_records_and_schedules(boot_run):
    log = read_log(boot_run / "log.jsonl")
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))  # 16 images / batch 4 = 4 steps x 2 epochs
    for r in steps:
        assert {"loss", "loss_cls", "loss_patch", "lr", "weight_decay", "momentum", "teacher_temp"} <= set(r)
        assert r["loss"] == pytest.approx(r["loss_cls"] + r["loss_patch"], rel=1e-5)
    # per-step schedules: teacher temperature 0.04 -> 0.07 over 1 epoch, momentum 0.996 -> 1, wd 0.04 -> 0.4
    assert steps[0]["teacher_temp"] == pytest.approx(0.04) and steps[-1]["teacher_temp"] == pytest.approx(
        0.07
    )
    assert steps[0]["momentum"] == pytest.approx(0.996) and steps[-1]["momentum"] > 0.999
    assert steps[0]["weight_decay"] == pytest.approx(0.04) and steps[-1]["weight_decay"] > 0.35
    knn = [r for r in log if "knn_top1" in r]
    assert [r["epoch"] for r in knn] == [1, 2]
    assert (boot_run / "config.yaml").is_file() and list((boot_run / "tb").iterdir())


def test_checkpoint_is_plain_data_with_the_teacher_encoder(boot_run):
    ckpts = CheckpointManager(boot_run).list()
    assert [p.name for p in ckpts] == ["ckpt-000000006.pth", "ckpt-000000008.pth"]  # keep-last 2
    ck = torch.load(ckpts[-1], weights_only=True)
    assert ck["model_config"]["trainer"] == "bootstrap" and ck["model_config"]["objective"] == "ibot"
    assert ck["sampler"]["effective_batch"] == 4 and ck["step"] == 8
    assert "masked_embed" in ck["student"] and "masked_embed" not in ck["model"]
    assert not any(k.startswith("head") for k in ck["model"])  # only the encoder, in timm names


def test_checkpoint_loads_as_an_encoder_with_the_teachers_features(boot_run):
    from semmae.bootstrap.model import Teacher

    ck = torch.load(CheckpointManager(boot_run).latest(), weights_only=True)
    loaded = load_encoder(CheckpointManager(boot_run).latest())
    vit = loaded.model
    assert loaded.layout == "semmae_pretrain" and loaded.record.embed_dim == 32 and not loaded.dropped_keys
    spec = {k: ck["model_config"][k] for k in ("name", "img_size", "patch_size", "embed_dim", "depth")}
    spec.update(num_heads=ck["model_config"]["num_heads"], mlp_ratio=ck["model_config"]["mlp_ratio"])
    teacher = Teacher(spec, dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, norm_last_layer=False))
    teacher.backbone.load_state_dict(ck["model"])
    x = torch.randn(2, 3, 32, 32)
    cls, patches = encoder_tokens(vit.eval(), x)
    want_cls, want_patches = teacher.eval().forward_encoder_features(x)
    torch.testing.assert_close(cls, want_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches, want_patches, atol=1e-5, rtol=1e-5)


def test_checkpoint_feeds_parts_train_knn_and_export(boot_run, boot_images, tmp_path, capsys):
    ckpt = str(CheckpointManager(boot_run).latest())
    parts = tmp_path / "parts"
    argv = ["parts", "train", "--config", "parts/tiny_cpu", "--data", str(boot_images), "--out", str(parts)]
    argv += ["--encoder-checkpoint", ckpt, "--img-size", "32", "--epochs", "1", "--batch-size", "8"]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 0
    assert (parts / "checkpoint.pth").is_file()
    capsys.readouterr()
    argv = ["knn", "--checkpoint", ckpt, "--train", str(boot_images), "--val", str(boot_images)]
    assert main([*argv, "--out", str(tmp_path / "knn"), "--num-workers", "0", "--device", "cpu"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"] <= 100
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--checkpoint", str(boot_run), "--out", str(out)]) == 0
    loaded = load_encoder(out)
    assert loaded.layout == "safetensors" and loaded.record.patch_size == 8


def test_student_learns_to_match_its_teacher(boot_images, tmp_path, boot_args):
    """A frozen teacher (momentum 1) at a fixed temperature, centred on each batch's mean: plain distillation,
    so the loss must fall. (With a moving teacher the loss of a micro run is not monotone: the centre starts at 0,
    which makes step 1's targets easy, and the temperature warm-up raises the targets' entropy - DINO's loss
    falls over epochs, not over the first steps.)"""
    out = tmp_path / "frozen"
    argv = boot_args(boot_images, out, "--epochs", "6", "--momentum", "1", "--no-ibot", "--local-crops", "0")
    argv += ["--teacher-temp", "0.04", "--center-momentum", "0", "--drop-path", "0", "--lr", "1e-3"]
    assert main(argv) == 0
    losses = list(logged_losses(out).values())
    assert len(losses) == 24
    first, last = sum(losses[1:5]) / 4, sum(losses[-4:]) / 4  # step 1 is centred on 0, not on a batch mean
    assert last < 0.85 * first, losses


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(boot_images, tmp_path, boot_args):
    # 4 steps per epoch, 3 epochs; checkpoints every 3 steps and at epoch ends: 3, 4, 6, 8, 9, 12. Every run is
    # a one-thread subprocess, so float sums run in the same order and the comparison can be exact.
    common = ["--epochs", "3", "--ckpt-every", "3", "--keep-last", "10", "--lr", "1e-3"]

    def run_cli(argv, kill_at=0):
        return run_killed_at(kill_at, argv, timeout=300)

    ref = tmp_path / "ref"
    assert run_cli(boot_args(boot_images, ref, *common, "--num-workers", "0")).returncode == 0
    run = tmp_path / "run"
    argv = boot_args(boot_images, run, *common, "--num-workers", "2")
    res = run_cli(argv, kill_at=11)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    mgr = CheckpointManager(run)
    assert mgr.latest() == mgr.path_for(9) and max(logged_losses(run)) == 11

    res = run_cli([*argv, "--resume", "auto"])
    assert res.returncode == 0, res.stderr[-3000:]
    log = [r for r in read_log(run / "log.jsonl") if "loss" in r]
    # 10 and 11 are redone; the resumed run drops their first records, so every step is logged once
    assert [r["step"] for r in log] == list(range(1, 13))
    lr, lu = logged_losses(ref), logged_losses(run)
    assert sorted(lr) == sorted(lu) == list(range(1, 13))
    for s in lr:
        assert lu[s] == lr[s], s  # bit for bit (and workers 0 vs 2 give the same crops)
    final_ref = torch.load(CheckpointManager(ref).latest(), weights_only=True)
    final_run = torch.load(mgr.latest(), weights_only=True)
    for key in ("model", "student", "teacher_head"):
        for k, v in final_ref[key].items():
            assert torch.equal(final_run[key][k], v), (key, k)
    assert torch.equal(final_run["centers"]["cls"]["center"], final_ref["centers"]["cls"]["center"])


def test_dino_mode_has_no_mask_token_and_no_patch_loss(boot_images, tmp_path, boot_args):
    out = tmp_path / "dino"
    assert main(boot_args(boot_images, out, "--epochs", "1", "--no-ibot")) == 0
    ck = torch.load(CheckpointManager(out).latest(), weights_only=True)
    assert ck["model_config"]["objective"] == "dino" and "masked_embed" not in ck["student"]
    assert all(r["loss_patch"] is None for r in read_log(out / "log.jsonl") if "loss" in r)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--local-size", "12"], "--local-size 12 is not a multiple of the patch size 8"),
        (["--model", "resnet50"], "--model 'resnet50': expected vit_<size>_patch<p>"),
        (["--mask-ratio", "0.5", "0.2"], "--mask-ratio must be 0 <= lo <= hi < 1"),
        (["--teacher-temp", "0"], "temperatures"),
        (["--eval-every", "1"], "--eval-every needs --eval-train and --eval-val"),
        (["--batch-size", "64"], "fewer than one effective batch"),
        (["--local-size", "64"], "--local-size 64 is larger than --img-size"),  # issue 29
    ],
)
def test_bad_input_is_one_line(boot_images, tmp_path, boot_args, capsys, extra, message):
    assert main(boot_args(boot_images, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("semmae bootstrap: error:") and message in err[0], err


def test_resuming_a_pretrain_checkpoint_is_refused(boot_images, tmp_path, boot_args, capsys):
    argv = [
        "pretrain",
        "--data",
        str(boot_images),
        "--out",
        str(tmp_path / "mae"),
        "--model",
        "mae_vit_micro_patch8",
    ]
    argv += ["--img-size", "32", "--precision", "fp32", "--no-progress", "--batch-size", "4", "--epochs", "1"]
    assert (
        main([*argv, "--warmup-epochs", "0", "--num-workers", "0", "--masking", "random", "--vis-every", "0"])
        == 0
    )
    capsys.readouterr()
    bad = boot_args(boot_images, tmp_path / "b", "--resume", str(tmp_path / "mae"))
    assert main(bad) == 2
    assert "not a `semmae bootstrap` checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["bootstrap/tiny_cpu", "bootstrap/ibot_vits16"])
def test_presets_resolve(preset):
    from semmae.bootstrap.model import backbone_spec

    cfg = resolve_config(BootstrapConfig, {"config": preset, "data": "x"})
    spec = backbone_spec(cfg.model, cfg.img_size, **cfg.encoder_overrides())
    assert cfg.local_size % spec["patch_size"] == 0
    if preset.endswith("vits16"):  # the paper's part encoder: iBOT ViT-S/16 at 224
        assert (spec["embed_dim"], spec["depth"], spec["num_heads"], spec["patch_size"]) == (384, 12, 6, 16)
        assert (cfg.img_size, cfg.local_size, cfg.local_crops, cfg.out_dim, cfg.ibot) == (
            224,
            96,
            10,
            8192,
            True,
        )
