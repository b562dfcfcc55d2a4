"""In-process `semmae pretrain` / `semmae export` runs on a micro model: records, guard rails, export to timm."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from semmae.cli import main
from semmae.config import resolve_config
from semmae.engine.checkpoint import CheckpointManager
from semmae.engine.config import PretrainConfig
from semmae.models import create_model, model_config
from semmae.utils.run_logger import read_log


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, engine_images):
    out = tmp_path_factory.mktemp("run")
    argv = [
        "pretrain",
        "--data",
        str(engine_images),
        "--out",
        str(out),
        "--model",
        "mae_vit_micro_patch8",
        "--img-size",
        "32",
        "--precision",
        "fp32",
        "--no-progress",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--warmup-epochs",
        "1",
        "--log-every",
        "3",
        "--vis-every",
        "1",
        "--num-workers",
        "0",
        "--masking",
        "random",
        "--ckpt-every",
        "2",
        "--keep-last",
        "2",
    ]
    assert main(argv) == 0
    return out


def test_run_records(trained_run):
    log = [r for r in read_log(trained_run / "log.jsonl") if "loss" in r]
    # 16 images / batch 4 = 4 steps per epoch, 2 epochs; logged every 3 steps and at the end
    assert [r["step"] for r in log] == [3, 6, 8]
    for r in log:
        assert {"step", "epoch", "loss", "lr", "alpha", "img_per_s", "memory_mb"} <= set(r)
    assert [r["epoch"] for r in log] == [0, 1, 1]
    # lr = blr * 4 / 256 with one warm-up epoch (4 steps), read at the step's own index
    lr = 1.5e-4 * 4 / 256
    assert log[0]["lr"] == pytest.approx(lr * 2 / 4)
    assert (trained_run / "config.yaml").is_file() and list((trained_run / "tb").iterdir())
    assert sorted(p.name for p in (trained_run / "vis").iterdir()) == ["epoch0001.png", "epoch0002.png"]
    ckpts = CheckpointManager(trained_run).list()
    assert [p.name for p in ckpts] == ["ckpt-000000006.pth", "ckpt-000000008.pth"]  # keep-last 2
    for path in ckpts:  # plain data only
        ck = torch.load(path, weights_only=True)
        assert ck["model_config"]["name"] == "mae_vit_micro_patch8" and ck["config"]["masking"] == "random"
        assert ck["sampler"]["step_in_epoch"] == ck["step"] % 4 and len(ck["rng"]) == 1
    assert torch.load(ckpts[0], weights_only=True)["sampler"] == {
        "epoch": 1,
        "step_in_epoch": 2,
        "seed": 0,
        "effective_batch": 4,
        "steps_per_epoch": 4,
    }


def test_export_loads_into_timm_with_same_features(trained_run, tmp_path, capsys):
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--checkpoint", str(trained_run), "--out", str(out)]) == 0
    ck = torch.load(CheckpointManager(trained_run).latest(), weights_only=True)
    mae = create_model("mae_vit_micro_patch8", img_size=32)
    mae.load_state_dict(ck["model"])
    mae.eval()
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out)),
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=0,
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls, patches = mae.forward_encoder_features(x)
        feats = vit.forward_features(x)
    torch.testing.assert_close(feats[:, 0], cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats[:, 1:], patches, atol=1e-5, rtol=1e-5)
    from safetensors import safe_open

    with safe_open(str(out), "pt") as fh:
        assert json.loads(fh.metadata()["model_config"])["embed_dim"] == 32
        assert float(fh.metadata()["fg_keep"]) == ck["config"]["fg_keep"]  # the evaluations' kept fraction
        assert not any(k.startswith(("decoder", "mask_token")) for k in fh.keys())


def test_part_guided_masking_without_cache_is_a_clear_error(engine_images, tmp_path, micro_args, capsys):
    assert main(micro_args(engine_images, tmp_path / "r", "--masking", "adaptive")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masking 'adaptive' is part-guided and needs a part cache" in err[0]
    assert "random, block" in err[0]
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_cache_on_another_grid_is_a_clear_error(engine_images, tmp_path, micro_args, capsys):
    """A 2x2 part cache on mae_vit_micro_patch8 at 32 px (a 4x4 patch grid): exit 2, one line naming both."""
    from semmae.data.folder import ImageFolderDataset
    from semmae.data.part_cache import PartCache

    files = ImageFolderDataset(engine_images).relative_paths
    writer = PartCache.create(tmp_path / "parts.cache", files, grid=2, num_parts=3)
    writer.write(0, torch.randint(0, 4, (len(files), 2, 2)).numpy(), torch.rand(len(files), 2, 2).numpy())
    writer.finalize()
    argv = micro_args(
        engine_images, tmp_path / "r", "--masking", "adaptive", "--parts", str(tmp_path / "parts.cache")
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "2x2 grid" in err[0] and "patch grid is 4x4" in err[0] and "--grid 4" in err[0]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(engine_images, tmp_path, micro_args, capsys):
    out = tmp_path / "r"
    rc = main(
        micro_args(
            engine_images,
            out,
            "--masking",
            "random",
            "--lr",
            "1e30",
            "--epochs",
            "3",
            "--warmup-epochs",
            "0",
            "--ckpt-every",
            "1",
            "--num-workers",
            "0",
        )
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "became non-finite at step" in err and "last good checkpoint" in err
    bad = int(err.split("non-finite at step ")[1].split()[0])
    latest = CheckpointManager(out).latest()
    ck = torch.load(latest, weights_only=True)
    assert ck["step"] == bad  # steps 0..bad-1 done, i.e. the checkpoint right before the bad step
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_unwritable_out_dir_is_reported(engine_images, tmp_path, micro_args, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(micro_args(engine_images, blocker / "run", "--masking", "random")) == 2
    assert "cannot" in capsys.readouterr().err


def test_masking_and_gamma_help_match_the_code(capsys, monkeypatch):
    """`semmae pretrain --help` names exactly the strategies pretraining accepts, and says what gamma does."""
    import re

    from semmae.engine.pretrain import build_strategy
    from semmae.errors import UserError
    from semmae.masking import MASKING_NAMES, alpha_schedule

    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping (argparse would break "per-part" at its hyphen)
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    masking_help = re.search(r"--masking MASKING (.*?) \(default", text).group(1)
    gamma_help = re.search(r"--gamma GAMMA (.*?) \(default", text).group(1)
    for name in MASKING_NAMES:
        try:
            build_strategy(PretrainConfig(data="x", parts="cache", masking=name))
            accepted = True
        except UserError:
            accepted = False
        assert (re.search(rf"(?<![\w-]){name}(?![\w-])", masking_help) is not None) == accepted, name
    assert "alpha = progress ** gamma" in gamma_help and "1/gamma" not in gamma_help
    for gamma in (2.0, 3.0):  # 0 at the start, 1 only at the end of training (not at progress 1/gamma)
        assert alpha_schedule(0.0, gamma) == 0.0 and alpha_schedule(1.0, gamma) == 1.0
        assert alpha_schedule(1 / gamma, gamma) == pytest.approx((1 / gamma) ** gamma)
        assert alpha_schedule(0.99, gamma) < 1.0


def test_every_flag_reaches_the_config():
    import argparse

    from semmae.config import add_config_args

    parser = argparse.ArgumentParser()
    add_config_args(parser, PretrainConfig)
    base = resolve_config(PretrainConfig, parser.parse_args(["--data", "x"]))
    given = {
        "--epochs": "300",
        "--global-batch": "128",
        "--blr": "1e-3",
        "--betas": ["0.8", "0.9"],
        "--clip-grad": "1.0",
        "--fg-keep": "0.25",
        "--resume": "auto",
        "--ckpt-every": "7",
        "--augment": "flip",
    }
    for flag, value in given.items():
        argv = ["--data", "x", flag, *(value if isinstance(value, list) else [value])]
        cfg = resolve_config(PretrainConfig, parser.parse_args(argv))
        assert cfg != base, flag


@pytest.mark.parametrize(
    "preset",
    [
        "pretrain/semmae_vitb16",
        "pretrain/semmae_vitb8",
        "pretrain/mae_vitb16",
        "pretrain/tiny_cpu",
        "pretrain/tiny_cpu_semmae",
    ],
)
def test_presets_resolve(preset):
    cfg = resolve_config(PretrainConfig, {"config": preset, "data": "x"})
    model_config(
        cfg.model, **cfg.model_overrides()
    )  # the preset's model is registered and its overrides valid
    if preset.endswith(("vitb16", "vitb8")):
        assert (cfg.epochs, cfg.warmup_epochs, cfg.global_batch, cfg.blr) == (800, 40, 4096, 1.5e-4)
        assert (cfg.mask_ratio, tuple(cfg.betas), cfg.weight_decay) == (0.75, (0.9, 0.95), 0.05)
    if preset.endswith("vitb8"):
        assert cfg.fg_keep == 0.25 and cfg.gamma == 2
    # paper Sec. 4.1: SemMAE pretrains with random horizontal flipping only; MAE's recipe crops as well
    assert cfg.augment == ("flip" if preset.startswith("pretrain/semmae") else "crop-flip")


def test_bad_image_stops_the_run_or_is_skipped_and_counted(tmp_path, micro_args, capsys):
    import shutil

    from _helpers import write_image_folder

    data = write_image_folder(tmp_path / "imgs", classes=("a",), per_class=8, size=40)
    (data / "a" / "img3.png").write_bytes(b"not an image")
    assert (
        main(
            micro_args(data, tmp_path / "stop", "--epochs", "1", "--num-workers", "0", "--masking", "random")
        )
        == 2
    )
    assert "img3.png" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "stop", ignore_errors=True)
    out = tmp_path / "skip"
    assert (
        main(
            micro_args(
                data, out, "--epochs", "1", "--num-workers", "0", "--masking", "random", "--skip-bad-images"
            )
        )
        == 0
    )
    assert "skipped 1 unreadable image" in capsys.readouterr().out
    assert read_log(out / "log.jsonl")[-1]["skipped_images"] == 1


@pytest.mark.parametrize("with_parts", [True, False])
def test_flip_only_augmentation_run(engine_images, tmp_path, micro_args, with_parts):
    """`--augment flip` (SemMAE's resize + flip) trains with and without a part cache and is recorded."""
    from semmae.data.folder import ImageFolderDataset
    from semmae.data.part_cache import PartCache

    extra = ["--masking", "random"]
    if with_parts:  # a 4x4 cache: mae_vit_micro_patch8 at 32 px
        files = ImageFolderDataset(engine_images).relative_paths
        writer = PartCache.create(tmp_path / "parts.cache", files, grid=4, num_parts=3)
        writer.write(0, torch.randint(0, 4, (len(files), 4, 4)).numpy(), torch.rand(len(files), 4, 4).numpy())
        writer.finalize()
        extra = ["--masking", "adaptive", "--parts", str(tmp_path / "parts.cache")]
    out = tmp_path / "r"
    argv = micro_args(engine_images, out, *extra, "--augment", "flip", "--epochs", "1", "--num-workers", "0")
    assert main(argv) == 0
    losses = [r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert resolve_config(PretrainConfig, {"config": str(out / "config.yaml")}).augment == "flip"


def test_unknown_augmentation_is_a_one_line_error(engine_images, tmp_path, micro_args, capsys):
    from semmae.errors import UserError

    with pytest.raises(SystemExit) as stop:  # argparse's choices, through the one-line error parser
        main(micro_args(engine_images, tmp_path / "r", "--augment", "crop"))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--augment" in err[0] and "crop-flip" in err[0] and "flip" in err[0], err
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="--augment must be one of crop-flip, flip, got 'crop'"):
        resolve_config(PretrainConfig, {"data": "x", "augment": "crop"})  # e.g. from a YAML config


def test_auto_workers_and_kept_token_online_knn(engine_images, tmp_path, micro_args, capsys, monkeypatch):
    """A run whose step threads take every core gets idle-priority decoding workers from `--num-workers auto`,
    and a `--fg-keep` run's online kNN is logged (scored on its kept patches: tests/engine/test_online_eval.py)."""
    from semmae.data import workers
    from semmae.data.folder import ImageFolderDataset
    from semmae.data.part_cache import PartCache

    monkeypatch.setattr(workers, "available_cores", lambda: torch.get_num_threads())  # no spare core
    files = ImageFolderDataset(engine_images).relative_paths
    writer = PartCache.create(tmp_path / "parts.cache", files, grid=4, num_parts=3)
    writer.write(0, torch.randint(0, 4, (len(files), 4, 4)).numpy(), torch.rand(len(files), 4, 4).numpy())
    writer.finalize()
    out = tmp_path / "r"
    argv = micro_args(
        engine_images,
        out,
        *("--parts", str(tmp_path / "parts.cache"), "--fg-keep", "0.25", "--epochs", "1"),
        *("--num-workers", "auto", "--eval-every", "1"),
        *("--eval-train", str(engine_images), "--eval-val", str(engine_images)),
    )
    assert main(argv) == 0
    n = min(torch.get_num_threads(), workers.MAX_AUTO_WORKERS)
    assert f"--num-workers auto -> {n} per rank at idle priority" in capsys.readouterr().out
    knn = [r for r in read_log(out / "log.jsonl") if "knn_top1" in r]
    assert len(knn) == 1 and 0.0 <= knn[0]["knn_top1"] <= 100.0


def test_no_progress_prints_one_plain_line_per_log_interval(engine_images, tmp_path, micro_args, capsys):
    """Issue 29: with --no-progress a run used to print nothing for minutes."""
    import re

    argv = micro_args(
        engine_images, tmp_path / "run", "--epochs", "1", "--max-steps", "3", "--masking", "random"
    )
    assert main(argv) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if re.match(r"semmae pretrain: step \d+/", x)]
    pattern = (
        r"semmae pretrain: step (\d)/3 \(epoch 0\) loss \d+\.\d{4} lr \S+ \d+\.\d img/s eta \d:\d\d:\d\d"
    )
    assert [int(re.fullmatch(pattern, x).group(1)) for x in lines] == [1, 2, 3], lines


def test_data_wait_is_the_loader_wait_only(engine_images, tmp_path, micro_args, monkeypatch):
    # prepare() queues device work; on a GPU timing it as data wait would count the previous step's kernels
    import time

    from semmae.engine.pretrain import Pretrainer

    prepare = Pretrainer.prepare

    def slow_prepare(self, batch, step, shard):
        time.sleep(0.25)
        return prepare(self, batch, step, shard)

    monkeypatch.setattr(Pretrainer, "prepare", slow_prepare)
    out = tmp_path / "run"
    assert (
        main(micro_args(engine_images, out, "--masking", "random", "--num-workers", "0", "--max-steps", "3"))
        == 0
    )
    waits = [r["data_wait"] for r in read_log(out / "log.jsonl") if "data_wait" in r]
    assert len(waits) == 3 and max(waits) < 0.5, waits


def test_one_loader_iterator_serves_every_epoch_of_a_run(engine_images, tmp_path, micro_args, monkeypatch):
    # the workers prefetch the next epoch while this one ends: the loader is iterated once per run, and the run
    # sees the same items, epoch by epoch, as one iterator per epoch gave
    from semmae.engine.sampler import StepSampler

    spans, original = [], StepSampler.__iter__

    def recording_iter(self):
        keys = list(original(self))
        spans.append(keys)
        return iter(keys)

    monkeypatch.setattr(StepSampler, "__iter__", recording_iter)
    out = tmp_path / "run"
    argv = micro_args(engine_images, out, "--masking", "random", "--num-workers", "1", "--epochs", "3")
    assert main(argv) == 0
    assert len(spans) == 1  # 16 images / batch 4 = 4 steps an epoch, 12 steps, one iterator
    expected = []
    for epoch in range(3):
        s = StepSampler(range(16), batch_size=4, num_replicas=1, rank=0, seed=0)
        s.set_epoch(epoch)
        expected += list(original(s))
    assert spans[0] == expected
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == list(range(1, 13))
