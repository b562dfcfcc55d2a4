"""`semmae export` to a timm model folder: ``timm.create_model("local-dir:...", pretrained=True)`` gives the features
of the project's own ``load_encoder`` for every kind of encoder the project makes (patch 16, patch 8 + kept
fraction, a size timm has no name for, a `semmae bootstrap` teacher), without semmae imported; timm's data config
fits the model; the card lists the run's evaluations; the Hub push fails in one line without a network."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from _helpers import (
    folder_snapshot,
    live_run,
    one_error_line,
    pretrain_checkpoint,
    subprocess_env,
    write_image_folder,
)
from PIL import Image

from semmae.cli import main
from semmae.errors import UserError
from semmae.export.encoder import export_encoder
from semmae.models import create_model
from semmae.models.encoder_loading import load_encoder
from semmae.utils.ownership import OWNER_NAME

CASES = {  # name -> (registered MAE, overrides, fg_keep)
    "patch16": ("mae_vit_micro_patch8", dict(patch_size=16, img_size=32), None),
    "patch8_keep": ("mae_vit_micro_patch8", dict(img_size=32), 0.25),
    "cpu_preset_size": (
        "mae_vit_tiny_patch8",
        dict(img_size=64, depth=6),
        None,
    ),  # width 192, 6 blocks, 64 px
}


def perturbed(name: str, **overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    with torch.no_grad():  # every weight non-trivial, so a mixed-up key changes the values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def assert_same_features(folder, img_size: int) -> torch.nn.Module:
    """timm's local-dir model and load_encoder(folder) agree; returns the timm model."""
    tm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    loaded = load_encoder(folder)
    ours = loaded.model
    assert loaded.layout == "timm_dir"
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        got, want = tm(x), ours.eval()(x)
    assert got.shape == (2, ours.embed_dim)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    return tm


@pytest.mark.parametrize("case", list(CASES))
def test_timm_local_dir_gives_the_features_of_load_encoder(case, tmp_path):
    name, overrides, keep = CASES[case]
    mae = perturbed(name, **overrides)
    extra = dict(fg_keep=keep) if keep else {}
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae, masking="random", epochs=3, data="imgs", **extra)
    out = export_encoder(tmp_path / "ckpt.pth", tmp_path / "export")
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        OWNER_NAME,
        "README.md",
        "config.json",
        "model.safetensors",
    ]  # the marker: semmae made it
    config = json.loads((out / "config.json").read_text())
    record = mae.encoder_record()
    assert config["num_classes"] == 0 and timm.is_model(config["architecture"])
    assert (
        config["model_args"]["embed_dim"] == record.embed_dim
        and config["model_args"]["depth"] == record.depth
    )
    assert config["pretrained_cfg"]["input_size"] == [3, record.img_size, record.img_size]
    tm = assert_same_features(out, record.img_size)
    # the same features as the MAE's own encoder
    x = torch.randn(1, 3, record.img_size, record.img_size)
    with torch.no_grad():
        torch.testing.assert_close(tm(x), mae.forward_encoder_features(x)[0], atol=1e-5, rtol=1e-5)
    loaded = load_encoder(out)
    assert loaded.record.fg_keep == keep
    if keep:
        assert f"only the {keep} most-foreground patches" in (out / "README.md").read_text()
    # timm's own preprocessing fits the model: any image in, the model's input size out
    data_config = timm.data.resolve_data_config({}, model=tm)
    assert data_config["input_size"] == (3, record.img_size, record.img_size)
    assert data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    batch = timm.data.create_transform(**data_config)(image).unsqueeze(0)
    with torch.no_grad():
        assert tm(batch).shape == (1, record.embed_dim)


def test_the_cpu_presets_size_is_named_after_its_real_shape(tmp_path):
    mae = perturbed("mae_vit_tiny_patch8", img_size=64, depth=6)
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    config = json.loads(
        (export_encoder(tmp_path / "ckpt.pth", tmp_path / "export") / "config.json").read_text()
    )
    assert config["semmae"]["name"] == "vit_d192x6h3_patch8_64"
    assert config["architecture"] == "vit_tiny_patch16_224"  # built from it with the real sizes as model_args
    assert {
        k: config["model_args"][k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
    } == (dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3))


SUBPROCESS = """
import sys, timm, torch
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
assert not any(m == "semmae" or m.startswith("semmae.") for m in sys.modules), "semmae was imported"
print("no semmae")
"""


def test_features_are_reproduced_by_a_process_that_never_imports_semmae(tmp_path):
    mae = perturbed("mae_vit_micro_patch8", img_size=32)
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae, fg_keep=0.25)
    out = export_encoder(tmp_path / "ckpt.pth", tmp_path / "export")
    x = torch.randn(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in subprocess_env().items() if k != "PYTHONPATH"}  # semmae not even importable
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "no semmae" in done.stdout, done.stderr
    ours = load_encoder(out).model
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), ours.eval()(x), atol=0, rtol=0)


BOOT = ["--model", "vit_micro_patch8", "--img-size", "32", "--local-size", "16", "--local-crops", "2"]
BOOT += ["--out-dim", "64", "--head-hidden-dim", "32", "--head-bottleneck-dim", "16", "--precision", "fp32"]
BOOT += ["--no-progress", "--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0", "--num-workers", "0"]
BOOT += ["--warmup-teacher-temp-epochs", "0", "--freeze-last-layer", "0"]


def test_a_bootstrap_run_exports_to_a_timm_folder(tmp_path):
    images = write_image_folder(tmp_path / "imgs", per_class=4, size=40)
    run = tmp_path / "boot"
    assert main(["bootstrap", "--data", str(images), "--out", str(run), *BOOT]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export")]) == 0
    assert_same_features(tmp_path / "export", 32)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "`semmae bootstrap`" in card and "self-distillation (ibot" in card


def test_the_card_lists_the_runs_evaluations(engine_images, micro_args, tmp_path):
    data = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 1)):
        write_image_folder(data / split, per_class=4, size=40, seed=seed)
    run = tmp_path / "run"
    assert (
        main(micro_args(engine_images, run, "--epochs", "1", "--masking", "random", "--num-workers", "0"))
        == 0
    )
    knn = ["knn", "--data", str(data), "--checkpoint", str(run), "--k", "3", "--num-workers", "0"]
    assert main([*knn, "--device", "cpu", "--out", str(run / "evals" / "knn")]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export")]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    top1 = json.loads((run / "evals" / "knn" / "results.json").read_text())["top1"]
    row = next(line for line in card.splitlines() if line.startswith("| kNN |"))
    assert f"| {top1:.4g} |" in row and "k 3" in row and "this checkpoint" in row and "`evals/knn`" in row
    for needle in (
        "Li et al., NeurIPS 2022",
        "MIT",
        "follow that data's terms",
        "random, mask ratio 0.75",
        "(MAE",
    ):
        assert needle in card, needle
    assert f"`{engine_images}`" in card  # the training data
    # the folder is what the evaluations read too
    assert (
        main(
            [*knn, "--device", "cpu", "--checkpoint", str(tmp_path / "export"), "--out", str(tmp_path / "k2")]
        )
        == 0
    )
    assert json.loads((tmp_path / "k2" / "results.json").read_text())["top1"] == top1


def test_export_refusals_are_one_line(tmp_path, capsys):
    mae = perturbed("mae_vit_micro_patch8", img_size=32)
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    ckpt = str(tmp_path / "ckpt.pth")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a semmae export"):
        export_encoder(ckpt, tmp_path / "theirs")
    with pytest.raises(UserError, match="drop --format safetensors"):
        export_encoder(ckpt, tmp_path / "e.safetensors", push_to_hub="me/repo")
    with pytest.raises(UserError, match="writes a folder"):
        export_encoder(ckpt, tmp_path / "e.safetensors", fmt="timm-dir")
    export_encoder(ckpt, tmp_path / "export")
    with pytest.raises(UserError, match="already holds a semmae export; pass --overwrite"):
        export_encoder(ckpt, tmp_path / "export")
    export_encoder(ckpt, tmp_path / "export", overwrite=True)  # an earlier export is replaced
    capsys.readouterr()
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "e.pth")]) == 2
    one_error_line(capsys, "name it *.safetensors")


def test_push_to_hub_without_a_network_fails_in_one_line(tmp_path, capsys, monkeypatch):
    mae = perturbed("mae_vit_micro_patch8", img_size=32)
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    argv = ["export", "--checkpoint", str(tmp_path / "ckpt.pth"), "--out", str(tmp_path / "export")]
    capsys.readouterr()
    assert main([*argv, "--push-to-hub", "me/semmae-micro"]) == 2
    one_error_line(capsys, "--push-to-hub me/semmae-micro", "http://127.0.0.1:9", "the export is kept")
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_a_timm_folder_from_elsewhere_is_read_through_its_config(tmp_path):
    """A folder timm itself wrote (``save_for_hf``), no semmae record: the sizes, heads included, from config.json."""
    from timm.models import save_for_hf

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4
    )
    vit.reset_classifier(0)
    save_for_hf(vit.eval(), str(tmp_path / "theirs"), safe_serialization=True)
    loaded = load_encoder(tmp_path / "theirs")
    ours = loaded.model
    assert loaded.layout == "timm_dir" and loaded.record.num_heads == 4 and loaded.record.img_size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), vit(x), atol=0, rtol=0)


def test_export_replaces_a_file_only_when_semmae_wrote_it(tmp_path, capsys):
    """Issue 37: `export --out mine.safetensors` replaced any file of that name, and wrote inside run folders."""
    mae = perturbed("mae_vit_micro_patch8", img_size=32)
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    ckpt = str(tmp_path / "ckpt.pth")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my own weights, not semmae's")
    argv = ["export", "--checkpoint", ckpt, "--out"]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, str(mine), *extra]) == 2
        assert mine.read_bytes() == b"my own weights, not semmae's"
    assert "semmae did not write it" in capsys.readouterr().err
    ours = tmp_path / "enc.safetensors"
    assert main([*argv, str(ours)]) == 0
    ours.write_bytes(ours.read_bytes())  # a fresh mtime_ns to tell a replacement by
    stamp = ours.stat().st_mtime_ns
    assert main([*argv, str(ours)]) == 2
    one_error_line(capsys, "already exists; pass --overwrite")
    assert ours.stat().st_mtime_ns == stamp
    assert main([*argv, str(ours), "--overwrite"]) == 0 and ours.stat().st_ino != 0
    assert load_encoder(ours).model is not None  # replaced by a readable export
    assert (
        main([*argv, ckpt, "--format", "safetensors"]) == 2
    )  # never its own input (named .pth: refused too)
    capsys.readouterr()
    with live_run(tmp_path / "running", "pretrain") as running:
        before = folder_snapshot(running)
        assert main([*argv, str(running / "enc.safetensors")]) == 2
        one_error_line(capsys, "the folder of a run that is still going")
        assert main([*argv, str(running / "export")]) == 2
        one_error_line(capsys, "the folder of a run that is still going")
        assert folder_snapshot(running) == before


def test_a_checkpoint_argument_that_is_an_export_folder_is_one_line(tmp_path):
    mae = perturbed("mae_vit_micro_patch8", img_size=32)
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    folder = export_encoder(tmp_path / "ckpt.pth", tmp_path / "export")
    with pytest.raises(UserError, match="is a folder `semmae export` wrote, not a checkpoint file"):
        export_encoder(folder, tmp_path / "again")
