"""One-factor part-learning ablations on cached frozen-encoder tokens (benchmarks/results/parts-synthetic.md).

Encodes the train images (and their flips) and the val images of a synthetic part set once with a frozen encoder
checkpoint, then trains the part head (Eq. 1-7, the package's PartModel and part_loss) for --steps steps with the
factors given on the command line, and scores the val maps against the ground-truth masks at --evals steps
(per-image / pooled NMI, Hungarian mIoU, fg IoU; collapse diagnostics). One JSON line per evaluation.

Usage (the demo's data and bootstrap encoder)::

    python benchmarks/parts_ablation.py --enc semmae_demo/bootstrap/checkpoints/ckpt-000000042.pth \
        --data semmae_demo/data --featcache /tmp/tokens.pt --sim cosine --lam 1.0 --tag cosine-lam1
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from semmae.data.folder import ImageFolderDataset
from semmae.parts.diagnostics import part_usage
from semmae.parts.encoder import FrozenEncoderSpec, build_encoder
from semmae.parts.evaluate import load_masks
from semmae.parts.inference import full_image_transform
from semmae.parts.loss import part_loss
from semmae.parts.metrics import PartScorer
from semmae.parts.model import PartHeadSpec, PartModel

p = argparse.ArgumentParser()
p.add_argument("--enc", required=True)
p.add_argument("--data", required=True)
p.add_argument("--img", type=int, default=64)
p.add_argument("--n", type=int, default=4)
p.add_argument("--steps", type=int, default=200)
p.add_argument("--evals", default="50,100,200")
p.add_argument("--bs", type=int, default=64)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--axis", default="parts")
p.add_argument("--sim", default="dot")
p.add_argument("--temp", type=float, default=0.1)
p.add_argument("--noscale", action="store_true")
p.add_argument("--blur", type=int, default=3)
p.add_argument("--dec", type=int, default=256)
p.add_argument("--decmin", type=int, default=32)
p.add_argument("--convs", type=int, default=2)
p.add_argument("--lam", type=float, default=0.03)
p.add_argument("--con", type=float, default=0.0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--layer", type=int, default=0, help="0 = last; -k = k-th block from the end")
p.add_argument("--tag", default="")
p.add_argument("--featcache", default="")
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(int(__import__("os").environ.get("NT", "1")))

enc = build_encoder(FrozenEncoderSpec(checkpoint=a.enc, img_size=a.img, feature_layer=a.layer))
root = Path(a.data)


def feats_of(split):
    ds = ImageFolderDataset(root / split, transform=full_image_transform(a.img))
    imgs = torch.stack([ds[i]["image"] for i in range(len(ds))])
    return ds, imgs


cache = Path(a.featcache) if a.featcache else None
if cache and cache.exists():
    d = torch.load(cache)
    tr_img, tr_cls, tr_pat, va_img, va_cls, va_pat, va_paths = (
        d[k] for k in ("tr_img", "tr_cls", "tr_pat", "va_img", "va_cls", "va_pat", "va_paths")
    )
else:
    t0 = time.time()
    trds, tr_img = feats_of("train")
    vads, va_img = feats_of("val")

    def enc_all(x):
        out = [enc(x[i : i + 128]) for i in range(0, len(x), 128)]
        return torch.cat([f["cls"] for f in out]), torch.cat([f["patches"] for f in out])

    tr_img = torch.cat([tr_img, tr_img.flip(-1)])
    tr_cls, tr_pat = enc_all(tr_img)
    va_cls, va_pat = enc_all(va_img)
    va_paths = vads.relative_paths
    print(f"features in {time.time() - t0:.1f}s", file=sys.stderr)
    if cache:
        torch.save(
            dict(
                tr_img=tr_img,
                tr_cls=tr_cls,
                tr_pat=tr_pat,
                va_img=va_img,
                va_cls=va_cls,
                va_pat=va_pat,
                va_paths=va_paths,
            ),
            cache,
        )

g = enc.grid_size
size = g * math.ceil(64 / g)
masks = load_masks(root / "masks" / "val", va_paths, size)
K = int(masks.max()) + 1
rep = size // g

spec = PartHeadSpec(
    embed_dim=enc.embed_dim,
    grid_size=g,
    img_size=a.img,
    num_parts=a.n,
    softmax_over=a.axis,
    scale_logits=not a.noscale,
    similarity=a.sim,
    temperature=a.temp,
    blur_kernel=a.blur,
    decoder_dim=a.dec,
    decoder_min_dim=a.decmin,
    decoder_convs=a.convs,
    proj_dim=256 if a.dec >= 128 else 64,
)
model = PartModel(spec)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
evals = sorted(int(x) for x in a.evals.split(","))
gen = torch.Generator().manual_seed(a.seed)


def evaluate():
    model.eval()
    with torch.no_grad():
        maps = torch.cat(
            [model.part_maps(va_cls[i : i + 256], va_pat[i : i + 256]) for i in range(0, len(va_cls), 256)]
        )
    model.train()
    u = part_usage(maps)
    ids = maps.argmax(1).reshape(-1, g, g).numpy()
    sc = PartScorer(K, a.n)
    for i in range(len(ids)):
        sc.add(masks[i], np.kron(ids[i], np.ones((rep, rep), np.int64)))
    r = sc.result()
    return {k: round(v, 3) for k, v in {**r, **u}.items() if not k.startswith("share_")}


t0 = time.time()
rows = []
for step in range(1, a.steps + 1):
    lr = a.lr * min(1.0, step / 10) * (0.5 * (1 + math.cos(math.pi * step / a.steps)) * 0.99 + 0.01)
    for gparam in opt.param_groups:
        gparam["lr"] = lr
    idx = torch.randint(0, len(tr_cls), (a.bs,), generator=gen)
    out = model(tr_cls[idx], tr_pat[idx])
    L = part_loss(out["recon"], tr_img[idx], out["maps"], a.lam, a.con)
    loss = L["loss"]
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step in evals:
        r = evaluate()
        r.update(
            step=step,
            rec=round(L["rec"].item(), 4),
            div=round(L["div"].item(), 3),
            sec=round(time.time() - t0, 1),
        )
        rows.append(r)
        print(json.dumps({"tag": a.tag, **r}), flush=True)
