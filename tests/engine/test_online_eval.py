"""Online kNN during pretraining: a run that keeps a share of its patches (--fg-keep) is scored on that share,
exactly as `semmae knn --tokens kept` (attention foreground) scores the exported encoder."""

from __future__ import annotations

import pytest
import torch
from _helpers import pretrain_checkpoint, write_image_folder

from semmae.engine.online_eval import encode_folder
from semmae.models import create_model
from semmae.models.encoder_loading import load_encoder
from semmae.models.foreground import encoder_foreground
from semmae.models.kept_tokens import KeptTokens
from semmae.models.vit_ops import forward_tokens


@pytest.fixture
def mae():
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8")
    with torch.no_grad():  # non-trivial weights: the attention differs between patches
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_kept_features_match_the_exported_encoder_evaluated_on_kept_tokens(mae, tmp_path):
    from semmae.export.encoder import export_encoder

    root = write_image_folder(tmp_path / "imgs", per_class=3, size=40)
    keep = KeptTokens(0.25, "attention", seed=5)
    feats, labels = encode_folder(mae, str(root), 32, 4, 0, torch.device("cpu"), keep=keep)
    assert feats.shape == (6, mae.config_dict()["embed_dim"]) and labels.tolist() == [0, 0, 0, 1, 1, 1]

    # the evaluation verbs' road: export, load as a timm ViT, pick by its own attention, forward the kept patches
    pretrain_checkpoint(tmp_path / "ckpt.pth", mae)
    vit = load_encoder(export_encoder(tmp_path / "ckpt.pth", tmp_path / "enc.safetensors")).model
    from semmae.data.folder import ImageFolderDataset
    from semmae.data.transforms import eval_transform

    ds = ImageFolderDataset(str(root), transform=eval_transform(32))
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        fg = encoder_foreground(vit.eval(), images)
        index = keep.keep_index(fg, torch.arange(len(ds)))
        want = forward_tokens(vit, images, keep_index=index)[:, 0]
    assert index.shape == (6, 4)  # a quarter of the 4x4 grid
    torch.testing.assert_close(feats, want, atol=1e-5, rtol=1e-5)

    # every patch (fg_keep = 1) is the plain unmasked encoding, and differs from the kept one
    all_feats, _ = encode_folder(mae, str(root), 32, 4, 0, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(all_feats, vit(images), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(all_feats, feats, atol=1e-3)


def test_online_knn_encodes_under_the_runs_autocast(mae, tmp_path):
    from semmae.engine.precision import resolve_precision

    root = write_image_folder(tmp_path / "imgs", per_class=2, size=40)
    fp32, _ = encode_folder(mae, str(root), 32, 4, 0, torch.device("cpu"))
    bf16 = resolve_precision("bf16", torch.device("cpu"))
    low, _ = encode_folder(mae, str(root), 32, 4, 0, torch.device("cpu"), precision=bf16)
    assert low.dtype == torch.float32 and not torch.equal(low, fp32)  # bf16 matmuls: close, not equal
    torch.testing.assert_close(low, fp32, atol=0.1, rtol=0.1)
