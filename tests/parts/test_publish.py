"""`semmae export --checkpoint PART_CHECKPOINT`: the part learner as a folder (head + its frozen encoder as a timm
folder + a card) that `semmae parts export` takes as --checkpoint and that gives the same part cache."""

from __future__ import annotations

import json

import numpy as np
import timm
import torch
from _helpers import pretrain_checkpoint

from semmae.cli import main
from semmae.data.part_cache import PartCache
from semmae.export.encoder import export_encoder
from semmae.models import create_model
from semmae.parts.checkpoint import load_part_model
from semmae.utils.ownership import OWNER_NAME

from .conftest import IMG, train_args


def export_cache(data, checkpoint, out) -> PartCache:
    argv = ["parts", "export", "--data", str(data), "--checkpoint", str(checkpoint), "--grid", "8"]
    assert main([*argv, "--out", str(out), "--batch-size", "2", "--num-workers", "0", "--device", "cpu"]) == 0
    return PartCache.open(out)


def assert_same_caches(a: PartCache, b: PartCache) -> None:
    assert len(a) == len(b) and a.num_parts == b.num_parts
    for i in range(len(a)):
        np.testing.assert_array_equal(a.codes(i), b.codes(i))


def test_the_exported_part_learner_gives_the_same_part_cache(tmp_path, synth, trained):
    folder = tmp_path / "learner"
    assert main(["export", "--checkpoint", str(trained.parent), "--out", str(folder)]) == 0  # the run folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == [OWNER_NAME, "README.md", "encoder", "parts.json", "parts.safetensors"]
    assert sorted(p.name for p in (folder / "encoder").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    spec = json.loads((folder / "parts.json").read_text())
    assert spec["format"] == "semmae-part-learner" and spec["head"]["num_parts"] == 6
    assert_same_caches(
        export_cache(synth / "val", trained, tmp_path / "a.parts"),
        export_cache(synth / "val", folder, tmp_path / "b.parts"),
    )
    # the frozen encoder alone loads in timm, with the part learner's features
    enc, _, _ = load_part_model(trained)
    tm = timm.create_model(f"local-dir:{folder / 'encoder'}", pretrained=True).eval()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(tm.forward_features(x), enc.vit.forward_features(x), atol=0, rtol=0)
    card = (folder / "README.md").read_text()
    assert "Li et al., NeurIPS 2022" in card and "6 part tokens" in card and "MIT" in card

    # an encoder export replaces it only with --overwrite, and whole: no part file is left beside the timm files
    pretrain_checkpoint(tmp_path / "enc.pth", create_model("mae_vit_micro_patch8", img_size=32))
    assert main(["export", "--checkpoint", str(tmp_path / "enc.pth"), "--out", str(folder)]) == 2
    assert sorted(p.name for p in folder.iterdir()) == names
    assert (
        main(["export", "--checkpoint", str(tmp_path / "enc.pth"), "--out", str(folder), "--overwrite"]) == 0
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        OWNER_NAME,
        "README.md",
        "config.json",
        "model.safetensors",
    ]

    # an encoder pretrained on that cache names the part learner in its card
    cache = tmp_path / "b.parts"
    mae = create_model("mae_vit_micro_patch8", img_size=32)
    pretrain_checkpoint(
        tmp_path / "ckpt.pth", mae, parts=str(cache), masking="adaptive", gamma=2.0, mask_ratio=0.75
    )
    card = (export_encoder(tmp_path / "ckpt.pth", tmp_path / "enc") / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| part cache"))
    assert "`semmae parts export`" in row and str(folder.resolve()) in row
    assert (
        "adaptive, mask ratio 0.75, alpha = progress^gamma with gamma 2" in card and "(SemMAE encoder" in card
    )


def test_a_random_init_part_encoder_travels_in_the_folder(tmp_path, synth):
    run = tmp_path / "run"
    args = train_args(
        synth / "train", run, "x", "--encoder", "vit_tiny_patch16_224", "--steps-per-epoch", "1"
    )
    args.remove("--encoder-checkpoint"), args.remove("x")
    assert main(args) == 0
    assert (
        main(["export", "--checkpoint", str(run / "checkpoint.pth"), "--out", str(tmp_path / "learner")]) == 0
    )
    a, _, _ = load_part_model(run / "checkpoint.pth")
    b, _, _ = load_part_model(tmp_path / "learner")
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    for key in ("cls", "patches", "cls_attn"):
        torch.testing.assert_close(ya[key], yb[key], atol=0, rtol=0)
