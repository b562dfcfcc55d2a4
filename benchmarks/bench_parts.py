"""Part-learning benchmark (paper Sec. 3.1 pipeline): export throughput vs the frozen encoder alone, part-train
step time, and part-cache bytes per image. ``run(quick)`` returns ``[{name, value, unit, target}]``.

Export = encoder forward (+ last-block CLS attention) + part maps (Eq. 1-2) + resize/argmax + foreground score +
packing into the cache, on the same in-memory batch as the encoder-only forward (data loading excluded from both),
so the ratio isolates what part export adds to the forward pass. Target: >= 0.8x.

``--smoke`` (the test suite's): ViT-Tiny/16 at 32 px, batch 2, one timed call of each, on the CPU.

The part-train steps are written out here (encoder or cached tokens + ``PartModel`` + ``part_loss`` + AdamW), not
taken from ``semmae parts train``'s trainer.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from semmae.data.part_cache import PartCache
from semmae.engine.precision import resolve_precision
from semmae.parts.encoder import FrozenEncoderSpec, build_encoder
from semmae.parts.inference import infer_parts
from semmae.parts.loss import part_loss
from semmae.parts.model import PartHeadSpec, PartModel
from semmae_lab.results_table import row
from semmae_lab.timing import mean_time as _timeit


def run(quick: bool = True, smoke: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    arch, img, batch, iters = (
        ("vit_tiny_patch16_224", 32, 2, 1)
        if smoke
        else ("vit_tiny_patch16_224", 64, 16, 3)
        if quick
        else ("vit_small_patch16_224", 224, 64 if device.type == "cuda" else 16, 10)
    )
    torch.manual_seed(0)
    encoder = build_encoder(FrozenEncoderSpec(arch=arch, img_size=img)).to(device)
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
            res = infer_parts(encoder, model.eval(), images, grid, resolve_precision("auto", device))
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
    rows = step_comparison(device, iters, 2 if smoke else 64)
    enc_ips, exp_ips = batch / t_enc, batch / t_exp
    tag = f"{arch}@{img} b{batch} {device.type}"
    return [
        row(f"parts/encoder_forward ({tag})", enc_ips, "images/s"),
        row(f"parts/export ({tag}, grid {grid})", exp_ips, "images/s"),
        row("parts/export_vs_encoder", exp_ips / enc_ips, "x", ">= 0.8"),
        row(f"parts/train_step ({tag})", t_train * 1000, "ms"),
        row(f"parts/cache_bytes_per_image (grid {grid})", bytes_per_image, "bytes"),
        *rows,
    ]


def step_comparison(device: torch.device, iters: int, batch: int = 64) -> list[dict]:
    """The demo's part step (tiny ViT width 192, depth 6, patch 8 at 64 px, batch 64, 4 parts) three ways, side by
    side: the encoder run every step with the decoder of the paper preset (width 256; the old demo recipe), tokens
    from the feature cache with the same decoder, and cached tokens with the light decoder of ``parts/tiny_cpu``
    (width 64, projections 64)."""
    from semmae.models.encoder_loading import encoder_from_record
    from semmae.models.encoder_record import EncoderRecord
    from semmae.parts.encoder import FrozenEncoder

    torch.manual_seed(0)
    vit = encoder_from_record(EncoderRecord.from_name("vit_d192x6h3_patch8", 64)).model  # timm's init
    encoder = FrozenEncoder(vit).to(device)
    images = torch.randn(batch, 3, 64, 64, device=device)
    with torch.no_grad():
        feats = encoder(images)

    def step_fn(spec: PartHeadSpec, online: bool):
        model = PartModel(spec).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            f = encoder(images) if online else feats
            out = model(f["cls"], f["patches"])
            loss = part_loss(out["recon"], images, out["maps"], 0.03)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    base = dict(embed_dim=192, grid_size=8, img_size=64, num_parts=4, blur_kernel=3, softmax_over="parts")
    paper = PartHeadSpec(**base)
    light = PartHeadSpec(**base, proj_dim=64, decoder_dim=64, decoder_min_dim=16, similarity="cosine")
    t = {
        "online_d256": _timeit(step_fn(paper, True), iters, device),
        "cached_d256": _timeit(step_fn(paper, False), iters, device),
        "cached_d64": _timeit(step_fn(light, False), iters, device),
    }
    tag = f"demo shape b{batch} {device.type}"
    return [row(f"parts/step_{k} ({tag})", v * 1000, "ms") for k, v in t.items()] + [
        row("parts/step_speedup_cached_d64_vs_online_d256", t["online_d256"] / t["cached_d64"], "x"),
        row("parts/step_speedup_cached_vs_online (same decoder)", t["online_d256"] / t["cached_d256"], "x"),
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--full", action="store_true", help="ViT-S/16 at 224 px instead of the quick tiny setting"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite's)")
    args = ap.parse_args()
    for row in run(quick=not args.full, smoke=args.smoke):
        print(json.dumps(row))
