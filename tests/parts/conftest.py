"""Fixtures of the part-learning tests: a tiny timm-layout encoder checkpoint, a tiny synthetic part dataset, and
one tiny trained part checkpoint shared by the CLI tests."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

IMG, PATCH, DIM, DEPTH, HEADS = 32, 8, 128, 2, 2  # 128 -> 2 heads in the encoder loader's standard table


def tiny_vit(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, num_classes=0
    )


@pytest.fixture(scope="session")
def encoder_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.pth"
    torch.save(tiny_vit().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    from semmae.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "syn"
    make_synthetic_dataset(
        root, num_images=12, size=IMG, seed=0, val_fraction=0.3, num_classes=2, progress=False
    )
    return root


def train_args(data, out, encoder_ckpt, *extra):
    return [
        "parts",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--encoder-checkpoint",
        str(encoder_ckpt),
        "--img-size",
        str(IMG),
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--decoder-dim",
        "16",
        "--decoder-min-dim",
        "8",
        "--proj-dim",
        "16",
        "--panel-images",
        "2",
        "--epochs",
        "1",
        *extra,
    ]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth, encoder_ckpt):
    from semmae.cli import main

    out = tmp_path_factory.mktemp("run") / "parts"
    assert main(train_args(synth / "train", out, encoder_ckpt)) == 0
    return out / "checkpoint.pth"
