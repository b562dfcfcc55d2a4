"""`semmae segment train|eval` end to end on a tiny fake ADE20K tree and the synthetic set (CPU, seconds)."""

from __future__ import annotations

import json

import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.cli import main
from semmae.config import resolve_config
from semmae.data.synth import make_synthetic_dataset
from semmae.eval.segmentation.config import SegmentTrainConfig
from semmae.eval.segmentation.engine import build_segmentor
from semmae.utils.run_logger import read_log

from .conftest import TINY_ENCODER, segment_train_argv


def test_train_eval_resume_on_fake_ade20k(fake_ade, tmp_path):
    out = tmp_path / "run"
    args = segment_train_argv(fake_ade, out, iters=2, ckpt_every=1, num_vis=2)
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"miou", "macc", "aacc", "per_class"} <= set(results)
    assert len(results["per_class"]) == 150 and results["per_class"][0]["name"] == "thing1"
    assert results["num_images"] == 2 and results["iteration"] == 2
    assert (out / "predictions.png").is_file() and (out / "config.yaml").is_file()
    ckpt = torch.load(out / "seg_final.pth", weights_only=True)
    assert ckpt["num_classes"] == 150 and ckpt["config"]["reduce_zero_label"] is None
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2]

    # resume: two more iterations continue from the checkpoint at iteration 2
    assert main([*args, "--iters", "4", "--resume", "auto"]) == 0
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2, 3, 4]

    # eval reproduces the final numbers from the run directory alone
    ev = tmp_path / "eval"
    assert (
        main(
            [
                "segment",
                "eval",
                "--checkpoint",
                str(out),
                "--out",
                str(ev),
                "--device",
                "cpu",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    again = json.loads((ev / "results.json").read_text())
    final = json.loads((out / "results.json").read_text())
    assert again["miou"] == final["miou"] and again["aacc"] == final["aacc"]


def test_synthetic_set_trains(tmp_path):
    make_synthetic_dataset(tmp_path / "s", num_images=10, size=32, progress=False)
    out = tmp_path / "run"
    assert (
        main(
            [
                "segment",
                "train",
                "--config",
                "segment/tiny_synth",
                "--data",
                str(tmp_path / "s"),
                *TINY_ENCODER,
                "--iters",
                "2",
                "--batch-size",
                "2",
                "--out",
                str(out),
                "--num-vis",
                "1",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["per_class"]][:2] == ["background", "head"]
    assert 0 <= results["aacc"] <= 100


def test_pretrained_encoder_weights_reach_the_backbone(tmp_path):
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / "enc.pth")
    cfg = resolve_config(
        SegmentTrainConfig,
        {"data": "x", "checkpoint": str(tmp_path / "enc.pth"), "num_heads": 2, "crop_size": 32},
    )
    model, encoder = build_segmentor(cfg, 4)
    assert encoder.layout == "timm" and not encoder.random_init
    assert torch.equal(model.backbone.vit.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    cfg = resolve_config(
        SegmentTrainConfig,
        {
            "data": "x",
            "checkpoint": str(tmp_path / "enc.pth"),
            "num_heads": 2,
            "crop_size": 32,
            "random_init": True,
        },
    )
    model, encoder = build_segmentor(cfg, 4)  # same architecture, fresh weights
    assert encoder.random_init and not torch.equal(
        model.backbone.vit.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight
    )


def test_user_errors_are_one_line(tmp_path, fake_ade, capsys):
    assert main(["segment", "train", "--data", str(fake_ade)]) == 2
    err = capsys.readouterr().err
    assert "--random-init" in err and err.count("\n") == 1
    assert main(["segment", "train", "--data", str(tmp_path / "nope"), "--random-init"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["segment", "eval", "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["segment", "train", "--data", str(fake_ade), *TINY_ENCODER]) == 2
    assert "fewer than one batch (16)" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                "train",
                "--data",
                str(fake_ade),
                *TINY_ENCODER,
                "--crop-size",
                "48",
                "--batch-size",
                "2",
            ]
        )
        == 2
    )
    assert "multiple" in capsys.readouterr().err


def test_every_train_flag_reaches_the_config():
    import dataclasses

    from semmae.cli import build_parser

    parser = build_parser()
    for f in dataclasses.fields(SegmentTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in parser.format_help() or flag in _train_help(parser), f.name


def _train_help(parser) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            parser.parse_args(["segment", "train", "--help"])
    except SystemExit:
        pass
    return buf.getvalue()


def test_diverging_training_names_no_checkpoint_it_never_wrote(fake_ade, tmp_path, capsys, monkeypatch):
    """Issue 29: the NaN message said 'last checkpoint kept in OUT' when none had been written."""
    import semmae.eval.segmentation.engine as engine

    real = engine.segmentation_loss

    def nan_loss(*args, **kw):
        losses = real(*args, **kw)
        return {**losses, "loss": losses["loss"] * float("nan")}

    monkeypatch.setattr(engine, "segmentation_loss", nan_loss)
    argv = ["segment", "train", "--data", str(fake_ade), *TINY_ENCODER, "--iters", "2", "--batch-size", "2"]
    argv += ["--log-every", "1", "--eval-every", "0", "--warmup-iters", "0", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "non-finite" in err[0] and "no checkpoint had been written yet" in err[0], err
