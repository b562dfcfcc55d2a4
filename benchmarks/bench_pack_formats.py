"""Which shard format `semmae data pack` should write: WebDataset vs litdata vs mosaicml-streaming, measured.

The same decoded images (uint8 [side, side, 3] + 144 part-cell bytes + a label per image, Imagenette at 96 px by
default) are written with each library, then read back the way pretraining reads them: random micro-batches of 32
chosen by our own deterministic sampler (``dataset[i]`` random access in the main process). Reported per library:
write throughput, bytes on disk per image, random-batch read throughput, and for WebDataset also sequential
streaming (``webdataset.WebDataset``) and the memory-mapped batch copy of :class:`semmae.data.packed.PackedImages`.

A library that is not installed is reported as such (install litdata / mosaicml-streaming to include them).

    python benchmarks/bench_pack_formats.py [--n 2048] [--data DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/imagenette2_96/train")


def _load(data: Path, n: int, side: int) -> tuple[list[np.ndarray], list[int]]:
    from semmae.data.folder import scan_image_folder
    from semmae.data.packed import _decode

    _, samples = scan_image_folder(data)
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(samples), size=min(n, len(samples)), replace=False))
    arrays, labels = [], []
    for i in pick:
        arr, _, _ = _decode((samples[i][0], side))
        arrays.append(arr)
        labels.append(samples[i][1])
    return arrays, labels


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_random(get, n: int, batches: int = 40, batch: int = 32) -> float:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(batches):
        for i in rng.integers(0, n, batch):
            get(int(i))
    return batches * batch / (time.perf_counter() - t0)


def bench_webdataset(arrays, labels, codes, tmp: Path) -> dict:
    import webdataset as wds

    from semmae.data.packed import PackedImages, _index_shard

    out = tmp / "wds"
    out.mkdir()
    t0 = time.perf_counter()
    with wds.TarWriter(str(out / "shard-000000.tar"), mtime=0) as sink:  # as `semmae data pack` writes
        for i, (a, lab) in enumerate(zip(arrays, labels)):
            sink.write({"__key__": f"{i:09d}", "pixels.npy": a, "parts.npy": codes, "cls": lab, "json": {}})
    write = len(arrays) / (time.perf_counter() - t0)
    size = _du(out)
    sizes = np.tile([[a.shape[0], a.shape[1]] for a in arrays[:1]], (len(arrays), 1))
    index = _index_shard(out / "shard-000000.tar", 0, len(arrays), labels, sizes)
    side = arrays[0].shape[0]
    meta = {
        "side": side,
        "classes": [],
        "num_images": len(arrays),
        "parts": {"grid": codes.shape[0], "num_parts": 6},
        "shards": [{"name": "shard-000000.tar"}],
    }
    pack = PackedImages(out, meta, index, np.zeros(len(arrays), dtype=np.int64))
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(40):
        pack.get_batch(rng.integers(0, len(arrays), 32))
    mmap = 40 * 32 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    k = sum(1 for _ in wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False).decode())
    stream = k / (time.perf_counter() - t0)
    return {"write": write, "bytes": size / len(arrays), "random": mmap, "stream": stream}


def bench_litdata(arrays, labels, codes, tmp: Path) -> dict:
    from litdata import StreamingDataset
    from litdata.streaming.writer import BinaryWriter

    out = tmp / "litdata"
    t0 = time.perf_counter()
    w = BinaryWriter(str(out), chunk_bytes="64MB")
    for i, (a, lab) in enumerate(zip(arrays, labels)):
        w[i] = {"pixels": a, "parts": codes, "label": lab}
    w.done()
    w.merge()
    write = len(arrays) / (time.perf_counter() - t0)
    size = _du(out)
    ds = StreamingDataset(str(out))
    return {"write": write, "bytes": size / len(arrays), "random": _read_random(ds.__getitem__, len(ds))}


def bench_streaming(arrays, labels, codes, tmp: Path) -> dict:
    from streaming import MDSWriter, StreamingDataset

    out = tmp / "mds"
    s, g = arrays[0].shape[0], codes.shape[0]
    cols = {"pixels": f"ndarray:uint8:{s},{s},3", "parts": f"ndarray:uint8:{g},{g}", "label": "int"}
    t0 = time.perf_counter()
    with MDSWriter(out=str(out), columns=cols, hashes=["sha1"], size_limit="64mb") as w:
        for a, lab in zip(arrays, labels):
            w.write({"pixels": a, "parts": codes, "label": lab})
    write = len(arrays) / (time.perf_counter() - t0)
    size = _du(out)
    ds = StreamingDataset(local=str(out), batch_size=32, shuffle=False)
    return {"write": write, "bytes": size / len(arrays), "random": _read_random(ds.get_item, len(ds))}


LIBRARIES = {
    "webdataset": ("webdataset", bench_webdataset),
    "litdata": ("litdata", bench_litdata),
    "mosaicml-streaming": ("streaming", bench_streaming),
}


def measure(n: int = 2048, data: Path = DATA, side: int = 96, grid: int = 12) -> list[dict]:
    """One row per library: write img/s, bytes/image, random-batch read img/s (and streaming img/s)."""
    arrays, labels = _load(data, n, side)
    codes = np.arange(grid * grid, dtype=np.uint8).reshape(grid, grid)
    rows = []
    for name, (module, fn) in LIBRARIES.items():
        if importlib.util.find_spec(module) is None:
            rows.append({"library": name, "note": "not installed"})
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f"packfmt-{module}-"))
        try:
            rows.append({"library": name, **fn(arrays, labels, codes, tmp)})
        except Exception as e:  # noqa: BLE001 - a library failing is a result too
            rows.append(
                {"library": name, "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def run(quick: bool = False) -> list[dict]:
    """``run_all.py`` rows (name, value, unit, target) for the installed libraries."""
    rows = []
    units = {"write": "img/s", "bytes": "B/image", "random": "img/s", "stream": "img/s"}
    labels = {"write": "write", "bytes": "disk", "random": "random-batch read", "stream": "sequential stream"}
    for r in measure(256 if quick else 2048):
        for key, unit in units.items():
            if key in r:
                rows.append(
                    {
                        "name": f"{r['library']} {labels[key]}",
                        "value": round(r[key], 1),
                        "unit": unit,
                        "target": "",
                    }
                )
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048, help="images")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    raw = 96 * 96 * 3 + 144
    print(f"{args.n} images, raw payload {raw} bytes/image")
    print(
        "| library | write img/s | bytes/image | random batch read img/s | sequential stream img/s | note |"
    )
    print("|---|---|---|---|---|---|")
    for r in measure(args.n, Path(args.data)):
        cells = [f"{r[k]:.0f}" if k in r else "" for k in ("write", "bytes", "random", "stream")]
        print(f"| {r['library']} | {' | '.join(cells)} | {r.get('note', '')} |")
