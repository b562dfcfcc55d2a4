"""The anchor encoder at MAE's own initialisation (xavier Linear, fixed sincos positions), evaluated like the
harness's rows: fast linear probe features -> kNN + logistic regression. Compares with the harness's random_init
row, which builds a timm VisionTransformer at timm's init (trunc-normal 0.02, random learned positions)."""

import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
import repro

from semmae.cli import main
from semmae.engine.knn_vote import knn_accuracy
from semmae.models import create_model
from semmae.utils.io import load_checkpoint

out = Path("runs/anchor-maeinit")
torch.manual_seed(0)
model = create_model("mae_vit_tiny_patch8", img_size=64, decoder_embed_dim=128, decoder_depth=4)
torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, out / "init.pth")
data = "/work/shared/data/imagenette2_96"
res = {}
for crop in ("1.0", "0.875"):
    d = out / f"probe-crop{crop}"
    assert (
        main(
            [
                "linprobe",
                "--train",
                f"{data}/train",
                "--val",
                f"{data}/val",
                "--checkpoint",
                str(out / "init.pth"),
                "--img-size",
                "64",
                "--batch-size",
                "256",
                "--mode",
                "fast",
                "--crop-pct",
                crop,
                "--epochs",
                "90",
                "--warmup-epochs",
                "9",
                "--seed",
                "0",
                "--out",
                str(d),
                "--num-workers",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    f = load_checkpoint(d / "features.pt")
    knn = knn_accuracy(f["train_x"], f["train_y"], f["val_x"], f["val_y"], 20, 0.07, len(f["classes"]))
    probe = json.loads((d / "results.json").read_text())
    probe = probe.get("metrics", probe)
    res[crop] = {
        "knn_top1": knn["top1"],
        "linprobe_top1": probe["top1"],
        "logreg_top1": repro.logistic_probe(f),
    }
    print(crop, res[crop], flush=True)
(out / "results.json").write_text(json.dumps(res, indent=1))
