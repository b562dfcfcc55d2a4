"""Part-learning benchmark (paper Sec. 3.1 pipeline): export throughput vs the frozen encoder alone, part-train
step time, and part-cache bytes per image. ``run(quick)`` returns ``[{name, value, unit, target}]``.

Export = encoder forward (+ last-block CLS attention) + part maps (Eq. 1-2) + resize/argmax + foreground score +
packing into the cache, on the same in-memory batch as the encoder-only forward (data loading excluded from both),
so the ratio isolates what part export adds to the forward pass. Target: >= 0.8x.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from semmae.data.part_cache import PartCache
from semmae.parts.encoder import EncoderSpec, build_encoder
from semmae.parts.inference import infer_parts
from semmae.parts.loss import part_loss
from semmae.parts.model import PartHeadSpec, PartModel


def _timeit(fn, iters: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def run(quick: bool = True) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch, img, batch, iters = (
        ("vit_tiny_patch16_224", 64, 16, 3)
        if quick
        else ("vit_small_patch16_224", 224, 64 if device.type == "cuda" else 16, 10)
    )
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(arch=arch, img_size=img)).to(device)
    spec = PartHeadSpec(embed_dim=encoder.embed_dim, grid_size=encoder.grid_size, img_size=img, num_parts=6)
    model = PartModel(spec).to(device)
    images = torch.randn(batch, 3, img, img, device=device)
    grid = 2 * encoder.grid_size  # the patch-8 MAE grid for a patch-16 part encoder (28 at 224 px)
    amp = device.type == "cuda"

    def encoder_only():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            encoder.vit.forward_features(images)

    t_enc = _timeit(encoder_only, iters, device)
    with tempfile.TemporaryDirectory() as tmp:
        n_total = batch * (iters + 1)
        writer = PartCache.create(f"{tmp}/bench.parts", [f"{i}.png" for i in range(n_total)], grid, 6)

        def export_step():
            res = infer_parts(encoder, model.eval(), images, grid, amp=amp)
            writer.write(writer.next_index, res["part_ids"].to(torch.uint8).cpu(), res["fg"].cpu())

        t_exp = _timeit(export_step, iters, device)
        cache = writer.finalize()
        bytes_per_image = cache.bytes_per_image

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feats = encoder(images)
            out = model(feats["cls"], feats["patches"])
        loss = part_loss(out["recon"].float(), images, out["maps"].float(), 0.03)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_train = _timeit(train_step, iters, device)
    enc_ips, exp_ips = batch / t_enc, batch / t_exp
    tag = f"{arch}@{img} b{batch} {device.type}"
    return [
        {"name": f"parts/encoder_forward ({tag})", "value": enc_ips, "unit": "images/s", "target": None},
        {"name": f"parts/export ({tag}, grid {grid})", "value": exp_ips, "unit": "images/s", "target": None},
        {"name": "parts/export_vs_encoder", "value": exp_ips / enc_ips, "unit": "x", "target": 0.8},
        {"name": f"parts/train_step ({tag})", "value": t_train * 1000, "unit": "ms", "target": None},
        {
            "name": f"parts/cache_bytes_per_image (grid {grid})",
            "value": bytes_per_image,
            "unit": "bytes",
            "target": None,
        },
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--full", action="store_true", help="ViT-S/16 at 224 px instead of the quick tiny setting"
    )
    args = ap.parse_args()
    for row in run(quick=not args.full):
        print(json.dumps(row))
