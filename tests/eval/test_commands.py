"""``semmae linprobe | finetune | knn`` end to end on tiny generated data, in-process."""

from __future__ import annotations

import json

import pytest
import torch
from timm.optim import param_groups_layer_decay

from semmae.cli import main
from semmae.eval.config import FinetuneConfig
from semmae.eval.finetune import build_classifier
from semmae.models.encoder_loading import load_encoder
from semmae.models.encoder_record import EncoderRecord
from semmae.utils.run_logger import read_log

COMMON = ["--num-workers", "0", "--device", "cpu", "--batch-size", "8"]


def full_linprobe_argv(data, ckpt, out) -> list[str]:
    """``semmae linprobe --mode full`` on the tiny split: one SGD rate, no warm-up (add --epochs)."""
    return [
        "linprobe",
        "--mode",
        "full",
        "--train",
        str(data / "train"),
        "--val",
        str(data / "val"),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
        "--warmup-epochs",
        "0",
        "--optimizer",
        "sgd",
        "--blrs",
        "0.5",
        *COMMON,
    ]


def results(out):
    return json.loads((out / "results.json").read_text())


def test_knn_and_fast_linprobe(tiny_data, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "knn"
    assert (
        main(
            [
                "knn",
                "--data",
                str(tiny_data),
                "--checkpoint",
                str(tiny_ckpt),
                "--out",
                str(out),
                "--k",
                "5",
                *COMMON,
            ]
        )
        == 0
    )
    r = results(out)
    assert 0 <= r["top1"] <= 100 and r["num_train"] == 16 and r["num_val"] == 8
    assert r["checkpoint"] == str(tiny_ckpt) and len(r["checkpoint_sha256"]) == 64
    assert r["encoder"]["layout"] == "semmae_pretrain" and r["config"]["k"] == 5
    assert (out / "config.yaml").is_file() and (out / "tb").is_dir() and read_log(out / "log.jsonl")

    out = tmp_path / "fast"
    argv = [
        "linprobe",
        "--mode",
        "fast",
        "--data",
        str(tiny_data),
        "--checkpoint",
        str(tiny_ckpt),
        "--out",
        str(out),
        "--epochs",
        "20",
        "--warmup-epochs",
        "2",
        "--optimizer",
        "sgd",
        "--blrs",
        "0.01",
        "1.0",
        "--fast-views",
        "1",
        *COMMON,
    ]
    assert main(argv) == 0
    r = results(out)
    assert r["mode"] == "fast" and r["num_train_rows"] == 32 and len(r["per_blr"]) == 2
    assert r["top1"] == max(p["top1"] for p in r["per_blr"])
    assert r["top1"] >= 75.0  # colour classes are linearly separable even through a random tiny ViT
    # two rates: the best is one of the sweep's ends, said in results.json and in one line at the end
    edge = {r["per_blr"][0]["blr"]: "bottom", r["per_blr"][1]["blr"]: "top"}[r["best_blr"]]
    assert r["best_on_edge"] == edge
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"semmae linprobe: note: the best blr {r['best_blr']:g} is the {edge} of the sweep"
    )
    cache = torch.load(out / "features.pt", weights_only=True)
    assert cache["train_x"].shape == (32, 32) and cache["val_x"].shape == (8, 32)
    assert main(argv) == 0 and results(out)["top1"] == r["top1"]  # reruns reuse the cached features


@pytest.mark.parametrize("verb", ["knn", "linprobe"])
def test_crop_pct_sets_the_evaluation_view(verb, tiny_data, tiny_ckpt, tmp_path, monkeypatch):
    from semmae.data import transforms
    from semmae.eval import common as module  # both verbs build their views there

    seen = []

    def spy(size, crop_pct=0.875, **kw):
        seen.append((size, crop_pct))
        return transforms.eval_transform(size, crop_pct=crop_pct, **kw)

    monkeypatch.setattr(module, "eval_transform", spy)
    argv = [verb, "--data", str(tiny_data), "--checkpoint", str(tiny_ckpt), "--crop-pct", "1.0", *COMMON]
    extra = ["--mode", "fast", "--epochs", "1", "--warmup-epochs", "0"] if verb == "linprobe" else []
    assert main([*argv, *extra, "--out", str(tmp_path / "a")]) == 0
    assert seen and all(c == 1.0 for _, c in seen)
    if verb == "linprobe":  # the cached features are keyed by the view
        assert torch.load(tmp_path / "a" / "features.pt", weights_only=True)["key"]["crop_pct"] == 1.0
    # 1.0 keeps the whole short side: Resize(size) + CenterCrop(size)
    size = seen[0][0]
    geometry = transforms.eval_transform(size, crop_pct=1.0).transforms[0]
    assert [type(t).__name__ for t in geometry.transforms] == ["Resize", "CenterCrop"]
    assert geometry.transforms[0].size == [size]


def test_full_linprobe_resumes(tiny_data, tiny_ckpt, tmp_path):
    out = tmp_path / "full"
    base = full_linprobe_argv(tiny_data, tiny_ckpt, out)
    assert main([*base, "--epochs", "1"]) == 0
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (state["kind"], state["epoch"], state["step"], state["step_in_epoch"]) == ("linprobe", 1, 2, 0)
    assert EncoderRecord.is_record(
        state["encoder"]
    )  # the frozen encoder's record, as every stage's checkpoint
    assert main([*base, "--epochs", "2"]) == 0
    epochs = [rec["step"] for rec in read_log(out / "log.jsonl") if "train_loss" in rec]
    assert epochs == [0, 1]  # the second run trained only the missing epoch
    r = results(out)
    assert r["mode"] == "full" and r["best_blr"] == 0.5 and "top5" in r
    assert r["best_on_edge"] is None  # one rate is no sweep: no edge to report


def test_finetune_random_init_with_ema(tiny_data, tiny_ckpt, tmp_path):
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--config",
        "eval/finetune_cpu_tiny",
        "--data",
        str(tiny_data),
        "--checkpoint",
        str(tiny_ckpt),
        "--random-init",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--ema",
        "--mixup",
        "0.8",
        "--cutmix",
        "1.0",
        *COMMON,
    ]
    assert main(argv) == 0
    r = results(out)
    assert r["random_init"] and 0 <= r["top1"] <= 100 and r["top5"] is None  # 2 classes: no top-5 (issue 29)
    assert r["checkpoint_sha256"] is None  # random init: only the architecture was read, no weights
    assert r["encoder"]["init"] == "mae"  # a semmae pretrain checkpoint: the baseline starts from MAE's init
    assert r["best_epoch"] in (0, 1) and r["ema_top1"] is not None
    best = torch.load(out / "best.pth", weights_only=True)
    assert best["model"]["head.weight"].shape == (2, 32)
    last = torch.load(out / "checkpoint.pth", weights_only=True)
    assert best["kind"] == last["kind"] == "finetune" and last["epoch"] == 2 and last["ema"] is not None
    assert EncoderRecord.from_dict(best["encoder"]) == EncoderRecord.from_dict(last["encoder"])
    # the one best file is still an encoder checkpoint: it loads as one, the fine-tuned weights in it
    encoder = load_encoder(str(out / "best.pth")).model
    assert torch.equal(
        encoder.state_dict()["blocks.0.attn.qkv.weight"], best["model"]["blocks.0.attn.qkv.weight"]
    )
    logs = [rec for rec in read_log(out / "log.jsonl") if "val_top1" in rec]
    assert len(logs) == 2 and all("ema_top1" in rec for rec in logs)


def test_layer_decay_scales(tiny_ckpt, tiny_data):
    cfg = FinetuneConfig(data=str(tiny_data), checkpoint=str(tiny_ckpt), layer_decay=0.5)
    model, loaded = build_classifier(cfg, 3)
    assert loaded.fresh_keys == ["fc_norm.bias", "fc_norm.weight"]
    groups = param_groups_layer_decay(model, 0.05, model.no_weight_decay(), layer_decay=0.5)
    scales = {round(g["lr_scale"], 6) for g in groups}
    assert scales == {0.125, 0.25, 0.5, 1.0}  # embeddings, block 0, block 1, head+norm (depth 2)


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["knn", "--checkpoint", "x.pth"], "--data DIR"),
        (["knn", "--data", "{data}"], "--random-init"),
        (["linprobe", "--data", "{data}", "--random-init"], "needs --arch"),
        (["knn", "--data", "{data}", "--checkpoint", "{data}/nope.pth"], "does not exist"),
        (["knn", "--data", "{data}", "--checkpoint", "x.pth", "--crop-pct", "1.5"], "--crop-pct"),
        (["linprobe", "--data", "{data}", "--checkpoint", "x.pth", "--crop-pct", "0"], "--crop-pct"),
        (
            [
                "finetune",
                "--data",
                "{data}",
                "--random-init",
                "--arch",
                "vit_tiny_patch8",
                "--batch-size",
                "7",
            ],
            "even",
        ),
    ],
)
def test_user_errors_are_one_line(argv, msg, tiny_data, capsys):
    argv = [a.format(data=tiny_data) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_top5_and_the_weights_hash_are_recorded_only_where_they_mean_something(
    tiny_data, tiny_ckpt, tmp_path, capsys
):
    """Issue 29: with 5 classes or fewer top-5 is 100 % by construction - neither printed nor recorded; a
    random-init encoder reads no weights, so no checkpoint hash is recorded."""
    from semmae.eval.common import without_trivial_top5

    data = ["--data", str(tiny_data), "--checkpoint", str(tiny_ckpt), "--k", "5", *COMMON]
    assert main(["knn", *data, "--out", str(tmp_path / "knn")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r = results(tmp_path / "knn")
    assert r["num_classes"] == 2 and r["top5"] is None and "top5" not in printed and "top1" in printed
    assert len(r["checkpoint_sha256"]) == 64
    assert main(["knn", *data, "--random-init", "--out", str(tmp_path / "init")]) == 0
    r = results(tmp_path / "init")
    assert r["random_init"] and r["checkpoint_sha256"] is None and r["checkpoint"] == str(tiny_ckpt)
    rows = {"num_classes": 3, "top5": 100.0, "per_blr": [{"blr": 0.1, "top5": 100.0, "top1": 50.0}]}
    assert without_trivial_top5(rows) == {
        "num_classes": 3,
        "top5": None,
        "per_blr": [{"blr": 0.1, "top5": None, "top1": 50.0}],
    }
    assert without_trivial_top5({**rows, "num_classes": 6}) == {**rows, "num_classes": 6}
