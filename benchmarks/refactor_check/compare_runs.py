"""Compare two trees of ``run_verbs.sh`` output: every log.jsonl record and results JSON without timing fields
(the run folders' owner markers differ by id and time: listed, not counted), and with ``--checkpoints`` every tensor
of every checkpoint. Exit 1 when anything else differs."""

import json
import sys
from pathlib import Path

SKIP = {
    "img_per_s",
    "memory_mb",
    "data_wait",
    "time",
    "seconds",
    "wall_s",
    "elapsed",
    "t",
    "timestamp",
    "eta",
}


def clean(v):
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if k not in SKIP and "time" not in k and "second" not in k}
    if isinstance(v, list):
        return [clean(x) for x in v]
    if isinstance(v, str):
        return v.replace(str(a), "ROOT").replace(str(b), "ROOT")
    return v


args = [x for x in sys.argv[1:] if not x.startswith("--")]
a, b = Path(args[0]).resolve(), Path(args[1]).resolve()
same = diff = 0
for f in sorted(a.rglob("*")):
    if (
        f.suffix not in (".jsonl", ".json")
        or "data" in f.relative_to(a).parts[:1]
        or f.name == ".semmae-owner.json"
    ):
        continue
    g = b / f.relative_to(a)
    if not g.exists():
        print("missing in b:", f.relative_to(a))
        diff += 1
        continue
    if f.suffix == ".jsonl":
        ra = [clean(json.loads(x)) for x in f.read_text().splitlines() if x.strip()]
        rb = [clean(json.loads(x)) for x in g.read_text().splitlines() if x.strip()]
    else:
        ra, rb = clean(json.loads(f.read_text())), clean(json.loads(g.read_text()))
    if ra == rb:
        same += 1
    else:
        diff += 1
        print("DIFF", f.relative_to(a))
        if isinstance(ra, list):
            for x, y in zip(ra, rb):
                if x != y:
                    print("  a:", x)
                    print("  b:", y)
                    break
            if len(ra) != len(rb):
                print("  lengths", len(ra), len(rb))
        else:
            print("  a:", ra)
            print("  b:", rb)
for f in sorted(b.rglob("*")):
    if (
        f.suffix in (".jsonl", ".json")
        and f.name != ".semmae-owner.json"
        and not (a / f.relative_to(b)).exists()
    ):
        print("missing in a:", f.relative_to(b))
        diff += 1
print(f"{same} log/result files identical, {diff} different")


def tensors(d, pre=""):
    import torch

    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(tensors(v, f"{pre}/{k}"))
    elif isinstance(d, (list, tuple)):
        for i, v in enumerate(d):
            out.update(tensors(v, f"{pre}/{i}"))
    elif torch.is_tensor(d):
        out[pre] = d
    return out


if "--checkpoints" in sys.argv:
    import torch

    for f in sorted(a.rglob("*.pth")):
        x = tensors(torch.load(f, weights_only=False))
        y = tensors(torch.load(b / f.relative_to(a), weights_only=False))
        bad = [
            k
            for k in set(x) | set(y)
            if k not in x or k not in y or x[k].shape != y[k].shape or not torch.equal(x[k], y[k])
        ]
        diff += bool(bad)
        print(f.relative_to(a), f"{len(x)} tensors", "identical" if not bad else f"DIFFER: {sorted(bad)[:5]}")
sys.exit(1 if diff else 0)
