"""The four commands as a user runs them (in-process), their outputs, resumption and one-line user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers import as_older_marker
from PIL import Image

from semmae.cli import main
from semmae.data.part_cache import PartCache
from semmae.parts.checkpoint import load_part_model
from semmae.utils.run_logger import read_log

from .conftest import IMG, PATCH, train_args


def test_train_writes_run_dir_and_plain_checkpoint(trained):
    run = trained.parent
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "semmae-parts" and ckpt["epoch"] == 1 and ckpt["step"] >= 1
    assert ckpt["encoder_state"] is None  # the encoder has its own checkpoint
    assert ckpt["head"]["num_parts"] == 6 and ckpt["head"]["blur_kernel"] == 7
    assert (run / "config.yaml").is_file() and (run / "panels" / "epoch_001.png").is_file()
    assert any(f.name.startswith("events") for f in (run / "tb").iterdir())
    assert any("epoch_loss" in r for r in read_log(run / "log.jsonl"))
    _, model, _ = load_part_model(trained)
    assert not model.training


def test_train_resumes_and_refuses_changed_model(tmp_path, synth, encoder_ckpt, capsys):
    out = tmp_path / "run"
    assert main(train_args(synth / "train", out, encoder_ckpt, "--softmax-over", "parts")) == 0
    first = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (
        main(train_args(synth / "train", out, encoder_ckpt, "--softmax-over", "parts", "--epochs", "2")) == 0
    )
    second = torch.load(out / "checkpoint.pth", weights_only=True)
    assert second["epoch"] == 2 and second["step"] == 2 * first["step"]
    assert main(train_args(synth / "train", out, encoder_ckpt, "--epochs", "3")) == 2
    assert "softmax_over" in capsys.readouterr().err

    # a checkpoint from before --similarity / --temperature / --feature-layer existed: read as their defaults
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    for key in ("similarity", "temperature", "feature_layer"):
        del ckpt["config"][key]
    torch.save(ckpt, out / "checkpoint.pth")
    as_older_marker(out)
    assert (
        main(train_args(synth / "train", out, encoder_ckpt, "--softmax-over", "parts", "--epochs", "3")) == 0
    )
    cosine = train_args(
        synth / "train", out, encoder_ckpt, "--softmax-over", "parts", "--similarity", "cosine"
    )
    assert main([*cosine, "--epochs", "4"]) == 2
    assert "similarity" in capsys.readouterr().err


def test_random_init_encoder_is_stored_in_checkpoint(tmp_path, synth):
    out = tmp_path / "run"
    args = train_args(
        synth / "train", out, "x", "--encoder", "vit_tiny_patch16_224", "--steps-per-epoch", "1"
    )
    args.remove("--encoder-checkpoint"), args.remove("x")
    assert main(args) == 0
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["encoder_state"] is not None
    enc1, _, _ = load_part_model(out / "checkpoint.pth")
    enc2, _, _ = load_part_model(out / "checkpoint.pth")
    torch.testing.assert_close(enc1.vit.pos_embed, enc2.vit.pos_embed)


def test_export_show_eval_end_to_end(tmp_path, synth, trained, capsys):
    cache_path = tmp_path / "val.parts"
    assert (
        main(
            [
                "parts",
                "export",
                "--data",
                str(synth / "val"),
                "--checkpoint",
                str(trained),
                "--grid",
                "8",
                "--out",
                str(cache_path),
                "--batch-size",
                "2",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    cache = PartCache.open(cache_path)
    n_val = len(list((synth / "val").rglob("*.png")))
    assert len(cache) == n_val and cache.grid == 8 and cache.num_parts == 6
    ids, fg = cache[0]
    assert ids.shape == (8, 8) and int(ids.max()) < 6 and float(fg.max()) == 1.0 and float(fg.min()) == 0.0
    assert cache.meta["producer"]["fg_source"].startswith("last-layer CLS attention")
    assert cache.meta["producer"]["encoder_architecture"]["patch_size"] == PATCH
    assert cache.meta["producer"]["encoder"]["arch"] is None  # read from the checkpoint, not the default name

    png = tmp_path / "show.png"
    assert (
        main(
            [
                "parts",
                "show",
                "--data",
                str(synth / "val"),
                "--checkpoint",
                str(trained),
                "--out",
                str(png),
                "--num-images",
                "2",
            ]
        )
        == 0
    )
    w, h = Image.open(png).size
    assert w > 4 * IMG and h > 2 * IMG
    with_truth = tmp_path / "show_gt.png"
    argv = ["parts", "show", "--data", str(synth / "val"), "--checkpoint", str(trained), "--num-images", "2"]
    assert main([*argv, "--out", str(with_truth), "--masks", str(synth / "masks" / "val")]) == 0
    assert Image.open(with_truth).size[0] > w  # one more column: the ground truth
    (tmp_path / "other_masks").mkdir()
    assert main([*argv, "--out", str(tmp_path / "x.png"), "--masks", str(tmp_path / "other_masks")]) == 2
    assert "no ground-truth mask" in capsys.readouterr().err

    assert (
        main(
            [
                "parts",
                "eval",
                "--data",
                str(synth / "val"),
                "--cache",
                str(cache_path),
                "--masks",
                str(synth / "masks" / "val"),
                "--num-workers",
                "0",
                "--eval-size",
                "30",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "learned" in text and "ceiling" in text
    metrics = json.loads((cache_path / "part_metrics.json").read_text())
    for m in ("learned", "attention", "kmeans", "spatial", "ceiling"):
        for k in ("nmi", "ari", "miou", "fg_iou", "nmi_image", "ari_image", "miou_image", "fg_iou_image"):
            assert 0.0 - 1e-9 <= metrics[m][k] <= 1.0 + 1e-9 or (k.startswith("ari") and metrics[m][k] >= -1)
        assert metrics[m]["images"] == n_val
        assert 1.0 <= metrics[m]["parts_used"] <= metrics[m]["parts_used_pooled"] + 1e-9
        assert 0.0 < metrics[m]["largest_share"] <= 1.0
    # the spatial split's usage is known exactly: 6 blocks of an 8x8 grid (rows 0-3 | 4-7, cols 0-2 | 3-5 | 6-7)
    shares = torch.tensor([12, 12, 8, 12, 12, 8]) / 64
    assert metrics["spatial"]["parts_used"] == pytest.approx(float(torch.exp(-(shares * shares.log()).sum())))
    cache_ids = torch.stack([cache[i][0].long() for i in range(n_val)]).flatten(1)
    largest = torch.stack([torch.bincount(r, minlength=7).max() for r in cache_ids]).float() / 64
    assert metrics["learned"]["largest_share"] == pytest.approx(float(largest.mean()))
    # the ceiling bounds the grid-level methods' per-image foreground separation only loosely; it must be sane
    assert metrics["ceiling"]["fg_iou"] > 0.5
    assert metrics["meta"]["notes"] == [] and "note:" not in text

    # object/background masks only (as CUB's segmentations): part-identity scores are flagged as fg/bg scores
    binary = tmp_path / "binary_masks"
    for src in (synth / "masks" / "val").rglob("*.png"):
        dst = binary / src.relative_to(synth / "masks" / "val")
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(Image.open(src)) > 0).astype(np.uint8)).save(dst)
    argv = ["parts", "eval", "--data", str(synth / "val"), "--cache", str(cache_path), "--num-workers", "0"]
    assert main([*argv, "--masks", str(binary), "--out", str(tmp_path / "bin.json")]) == 0
    assert "note: the masks hold a single foreground label" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "bin.json").read_text())["meta"]["notes"]) == 1

    # no ground truth at all (a photo set such as Imagenette): only the usage of the parts, beside the baselines
    assert main([*argv, "--out", str(tmp_path / "usage.json")]) == 0
    assert "note: no --masks or --keypoints" in capsys.readouterr().out
    usage = json.loads((tmp_path / "usage.json").read_text())
    assert {"learned", "attention", "kmeans", "spatial"} <= set(usage) and "ceiling" not in usage
    assert all("nmi_image" not in usage[m] for m in ("learned", "spatial"))
    assert usage["learned"]["parts_used"] == pytest.approx(metrics["learned"]["parts_used"])
    assert usage["spatial"]["largest_share"] == pytest.approx(12 / 64)


def test_export_resumes_an_interrupted_cache(tmp_path, synth, trained, monkeypatch):
    from semmae.data.part_cache import PartCacheWriter
    from semmae.parts.config import PartsExportConfig
    from semmae.parts.export import export_parts

    cfg = PartsExportConfig(
        data=str(synth / "val"),
        checkpoint=str(trained),
        out=str(tmp_path / "full.parts"),
        grid=4,
        batch_size=2,
        num_workers=0,
    )
    full = export_parts(cfg)
    expect = np.stack([full[i][0].numpy() for i in range(len(full))])

    cfg.out = str(tmp_path / "c.parts")
    real_write, calls = PartCacheWriter.write, []

    def write_then_die(self, start, part_ids, fg):
        calls.append(start)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(self, start, part_ids, fg)

    monkeypatch.setattr(PartCacheWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        export_parts(cfg)
    monkeypatch.setattr(PartCacheWriter, "write", real_write)
    starts = []
    monkeypatch.setattr(
        PartCacheWriter, "write", lambda self, s, p, f: (starts.append(s), real_write(self, s, p, f))
    )
    again = export_parts(cfg)
    assert starts[0] == 2  # continued after the first written batch
    assert np.array_equal(np.stack([again[i][0].numpy() for i in range(len(again))]), expect)


def test_eval_with_cub_style_keypoints(tmp_path, synth, trained):
    cache_path = tmp_path / "val.parts"
    assert (
        main(
            [
                "parts",
                "export",
                "--data",
                str(synth / "val"),
                "--checkpoint",
                str(trained),
                "--out",
                str(cache_path),
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    from semmae.data.folder import ImageFolderDataset

    rows = ["image_id,file,part_id,part_name,x,y,visible"]
    for i, rp in enumerate(ImageFolderDataset(synth / "val").relative_paths):
        rows += [f"{i},{rp},1,beak,3.0,3.0,1", f"{i},{rp},2,tail,28.0,29.0,1", f"{i},{rp},3,eye,,,0"]
    kp = tmp_path / "kp" / "keypoints.csv"
    kp.parent.mkdir()
    kp.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "parts",
                "eval",
                "--data",
                str(synth / "val"),
                "--cache",
                str(cache_path),
                "--keypoints",
                str(kp.parent),
                "--num-workers",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    n_val = len(ImageFolderDataset(synth / "val"))
    assert m["learned"]["keypoints"] == 2 * n_val  # invisible ones are ignored
    assert m["spatial"]["kp_nmi"] == pytest.approx(1.0)  # opposite corners always fall in different blocks
    assert m["ceiling"]["kp_nmi"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["parts", "train"], "--data is required"),
        (
            [
                "parts",
                "train",
                "--data",
                "/nonexistent/dir",
                "--encoder",
                "vit_tiny_patch16_224",
                "--img-size",
                "32",
            ],
            "/nonexistent/dir",
        ),
        (["parts", "train", "--data", "x", "--blur-kernel", "4"], "--blur-kernel"),
        (["parts", "export", "--data", "x", "--checkpoint", "/no/ckpt.pth", "--out", "y"], "does not exist"),
        (["parts", "eval", "--data", "/nonexistent/x", "--cache", "y"], "does not exist"),
        (["parts", "train", "--data", "x", "--num-parts", "300"], "holds at most 15 parts"),  # issue 29
    ],
)
def test_user_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_not_a_part_checkpoint_and_mismatched_cache(tmp_path, synth, trained, encoder_ckpt, capsys):
    assert main(["parts", "show", "--data", str(synth / "val"), "--checkpoint", str(encoder_ckpt)]) == 2
    assert "not a part checkpoint" in capsys.readouterr().err
    cache_path = tmp_path / "train.parts"
    assert (
        main(
            [
                "parts",
                "export",
                "--data",
                str(synth / "train"),
                "--checkpoint",
                str(trained),
                "--out",
                str(cache_path),
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "parts",
                "eval",
                "--data",
                str(synth / "val"),
                "--cache",
                str(cache_path),
                "--masks",
                str(synth / "masks" / "val"),
                "--no-baselines",
            ]
        )
        == 2
    )
    assert "different dataset" in capsys.readouterr().err


@pytest.mark.parametrize(
    "preset,img,blur,lam,similarity,features",
    [
        ("parts/ibot_vits16", 224, 7, 0.03, "dot", "online"),
        ("parts/tiny_cpu", 48, 5, 1.0, "cosine", "cached"),
    ],
)
def test_presets_resolve(preset, img, blur, lam, similarity, features):
    from semmae.config import resolve_config
    from semmae.parts.config import PartsTrainConfig

    cfg = resolve_config(PartsTrainConfig, {"config": preset, "data": "x", "blur_kernel": str(blur)})
    assert cfg.img_size == img and cfg.num_parts == 6 and cfg.div_weight == lam and cfg.blur_kernel == blur
    assert cfg.similarity == similarity and cfg.features == features


def test_diverging_part_training_names_no_checkpoint_it_never_wrote(
    tmp_path, synth, encoder_ckpt, capsys, monkeypatch
):
    """Issue 29: the NaN message used to name runs/.../checkpoint.pth before any was written."""
    import semmae.parts.train as train

    real = train.part_loss

    def nan_loss(*args, **kw):
        losses = real(*args, **kw)
        return {**losses, "loss": losses["loss"] * float("nan")}

    monkeypatch.setattr(train, "part_loss", nan_loss)
    out = tmp_path / "nan"
    assert main(train_args(synth / "train", out, encoder_ckpt, "--log-every", "1")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the progress bar
    assert len(err) == 1 and "non-finite" in err[0] and "no checkpoint had been written yet" in err[0], err
    assert not (out / "checkpoint.pth").exists()
