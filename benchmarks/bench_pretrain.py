"""`semmae pretrain` end to end (data loading included) vs the model step alone on in-memory tensors.

CPU (default): a small MAE (ViT-Tiny width, 6 blocks, patch 8) at 96 px on Imagenette-96, batch 32, random
masking, MAE's crop-flip augmentation, fed four ways side by side in one process: the JPEG folder decoded in the
training process (0 workers), with 2 DataLoader workers (the earlier setting), with ``--num-workers auto``, and
a pack of the same images made by ``semmae data pack --side 96`` (whose pack throughput and bytes per image are
reported too). ``e2e`` is measured from each run's own ``log.jsonl`` timestamps after a warm-up (so worker
start-up is excluded); ``step`` runs the same model, optimiser, precision and masking on one batch held in memory,
on the same trainer, in two blocks: right before the run and right after it (the load of a shared machine drifts;
the pooled rate of the two blocks cancels a linear drift). Both rates are images over wall-clock time of their
window, so their ratio compares like with like. Because a run and its step blocks are half a minute
apart, and this VM's speed drifts by 10-20 % within that, each feed is also measured by ``paired_ratio``: on the
same trainer, short blocks of loader-fed steps alternate with blocks of held-batch steps (workers settled and
their prefetched batches discarded between blocks), which cancels the drift. Targets: packed e2e / step >= 0.95, folder (auto workers)
e2e / step >= 0.9. Peak memory is the process's max RSS (CPU) or the CUDA allocator's peak.

    python benchmarks/bench_pretrain.py [--quick | --smoke] [--rounds N] [--raw FILE] [--data DIR] [--pack DIR]

``--smoke`` (the test suite's): every feed, the pack and the loader probe once on generated images (16 JPEGs) with
the micro MAE at 32 px, batch 4 (:data:`SMOKE`), a few steps each.

On a GPU the same questions (ViT-B/16 at 224 px, bf16: the held step with random vs adaptive masking, eager vs
``torch.compile``; pack vs JPEG folders end to end, and JPEGs decoded on the GPU with a batched
``torchvision.io.decode_jpeg(device="cuda")``) are sections of ``benchmarks/gpu_validate.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from semmae.engine.pretrain import Pretrainer
from semmae.engine.progress import memory_mb
from semmae.engine.trainer import open_trainer
from semmae_lab.bench import bench_config, held_step_times
from semmae_lab.results_table import row
from semmae_lab.timing import logged, logged_rate

# the developers' machine path, not a user default: pass --data (e.g. `semmae data get imagenette`'s train/)
DATA = Path("/work/shared/data/imagenette2_96/train")

#: the measured run: MAE, image side (and the pack's), batch, steps of a run, held steps per bracket, log interval
SIZES = dict(model="mae_vit_tiny_patch8", depth=6, decoder_depth=2, img=96, batch=32, log_every=3)
QUICK = dict(SIZES, steps=15, n_step=5, blocks=3, probe=10, settle_s=0.5)
FULL = dict(SIZES, steps=60, n_step=10, blocks=10, probe=30, settle_s=0.5)
# (probe 4: the loader probe reads 5 batches, more than the run's span leaves after the held bracket advanced the
# trainer's step, so a probe that does not reread its span from step 0 fails the smoke run)
SMOKE = dict(
    model="mae_vit_micro_patch8", depth=1, decoder_depth=1, img=32, batch=4, log_every=1,
    steps=6, n_step=1, blocks=1, probe=4, settle_s=0.05,
)  # fmt: skip


def loader_batch(trainer: Pretrainer) -> dict:
    """The loader's first batch as the loader gives it: the held batch. ``step_at`` prepares the batch it steps on
    (a folder batch's normalisation, a packed batch's crop/flip), inside the step as in the run; a batch prepared
    already (:func:`semmae_lab.bench.held_batch`) would be prepared twice, which a packed batch cannot be."""
    return next(iter(trainer.loader))


def step_times(trainer: Pretrainer, steps: int, warmup: int = 3) -> tuple[int, list[float]]:
    """Batch size and seconds of each of ``steps`` held-batch steps of ``trainer`` (after ``warmup`` steps)."""
    batch = loader_batch(trainer)
    return len(batch["index"]), held_step_times(trainer, batch, steps, warmup=warmup)


def paired_ratio(trainer: Pretrainer, blocks: int, k: int = 4, settle_s: float = 0.5) -> float:
    """Loader-fed step over held-batch step, alternated in short blocks on one trainer (``blocks`` times: ``k``
    steps on one batch held in memory, then ``k`` steps fed by the loader: fetch + ``prepare`` + the step); the
    ratio of their summed wall-clock times. Alternating every few seconds cancels the machine's drift, which the
    run-based ratio (a minute apart) keeps.

    Loader workers keep ``prefetch_factor x workers`` batches in flight, so untimed, between the blocks: before a
    held block the workers are given ``settle_s`` to fill their queue (then they are idle, as a baseline must
    have them), and before a fed block the prefetched batches are taken off the queue unused (so the fed block
    decodes every batch it steps on; its first step waits for a whole batch, which counts against the feed).
    The trainer's own per-step bookkeeping (a log record every ``--log-every`` steps) is in neither block."""
    in_flight = trainer.num_workers * (trainer.loader.prefetch_factor or 0)

    step_on = trainer.step_at
    it = iter(trainer.loader)

    def fetch() -> dict:
        nonlocal it
        try:
            return next(it)
        except StopIteration:  # an epoch's end: the next epoch
            it = iter(trainer.loader)
            return next(it)

    held = fetch()  # step_at prepares what it steps on, the held batch included (see loader_batch)
    for i in range(2):  # warm-up of both kinds
        step_on(fetch(), i)
        step_on(held, i)
    fed_s = held_s = 0.0
    step = 2
    for _ in range(blocks):
        if in_flight:
            time.sleep(settle_s)
        t0 = time.perf_counter()
        for _ in range(k):
            step_on(held, step)
            step += 1
        held_s += time.perf_counter() - t0
        for _ in range(in_flight):
            fetch()
        t0 = time.perf_counter()
        for _ in range(k):
            step_on(fetch(), step)
            step += 1
        fed_s += time.perf_counter() - t0
    return held_s / fed_s


def loader_throughput(trainer: Pretrainer, batches: int) -> float:
    """Images/s of the input pipeline alone after its first batch: the DataLoader (decode + joint transforms +
    collate for folders; the batch copy out of the shards for packs) plus, for packs, the batch crop/flip."""
    # the run left its sampler at the end of its span: read the first batches + 1 steps again (one pass, no epochs)
    trainer.sampler.set_span(0, batches + 1)
    it = iter(trainer.loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for k in range(batches):
        batch = trainer.prepare(next(it), k, 0)
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - t0)


def _cpu_run(data: Path, sizes: dict, workers: str) -> dict:
    """One short CPU pretraining run bracketed by two blocks of the model step alone on the same trainer (before
    and after: a linear drift of the machine's speed cancels in their pooled rate). Returns the trainer, its
    end-to-end img/s, its input-wait share, the pooled step img/s and the step's per-step times."""
    with tempfile.TemporaryDirectory() as tmp:
        model = dict(depth=sizes["depth"], decoder_depth=sizes["decoder_depth"])
        run = dict(max_steps=sizes["steps"], batch_size=sizes["batch"], log_every=sizes["log_every"])
        cfg = bench_config(data, tmp, sizes["model"], sizes["img"], **model, **run, num_workers=workers)
        trainer = open_trainer(Pretrainer, cfg)
        warmup = 1 if sizes["n_step"] < 2 else 3
        batch, before = step_times(trainer, sizes["n_step"], warmup)
        trainer.run()
        _, after = step_times(trainer, sizes["n_step"], warmup)
        times = before + after
        return dict(
            trainer=trainer,
            e2e=logged_rate(Path(tmp) / "log.jsonl", cfg.batch_size),
            wait=statistics.mean(logged(Path(tmp) / "log.jsonl", "data_wait")),
            step=batch * len(times) / sum(times),
            step_median=batch / statistics.median(times),
            drift=sum(after) / sum(before),
        )


def pack_for_bench(data: Path, out: Path, side: int = 96) -> dict:
    """Pack ``data`` at ``side`` px (decoding workers: every core but one); img/s and bytes/image of the pack."""
    from semmae.data.packed import pack_dataset
    from semmae.data.workers import available_cores

    workers = max(0, available_cores() - 1)
    report = pack_dataset(data, out, side=side, shard_size=2048, workers=workers, progress=False)
    jpeg = sum(os.path.getsize(p) for p in data.rglob("*") if p.is_file())
    return {
        "img_s": report.num_images / report.seconds,
        "bytes": report.bytes_per_image,
        "jpeg_bytes": jpeg / report.num_images,
        "workers": workers,
    }


FEEDS = (
    ("folder0", "JPEG folder, 0 workers", "0"),
    ("folder2", "JPEG folder, 2 workers", "2"),
    ("auto", "JPEG folder, --num-workers auto", "auto"),
    ("packed", "packed, --num-workers auto", "auto"),
)


def _round(data: Path, pack: Path, sizes: dict, shift: int = 0) -> dict[str, dict]:
    """One side-by-side round: each feed's run between two blocks of the model step alone on the same trainer (on a
    shared machine the load drifts, so each ratio uses the steps measured around it). ``shift`` rotates the order
    of the feeds, so that no feed always runs first or last in a round."""
    out: dict[str, dict] = {}
    order = FEEDS[shift % len(FEEDS) :] + FEEDS[: shift % len(FEEDS)]
    for key, _, workers in order:
        r = _cpu_run(pack if key == "packed" else data, sizes, workers)
        trainer = r.pop("trainer")
        r.update(ratio=r["e2e"] / r["step"], ratio_median_step=r["e2e"] / r["step_median"])
        r["workers"] = trainer.num_workers
        k = min(sizes["batch"], 4 if trainer.num_workers == 0 else 8)  # the smoke run: its batch of steps
        r["paired"] = paired_ratio(trainer, sizes["blocks"], k, sizes["settle_s"])
        if key in ("folder2", "packed"):
            r["pipeline"] = loader_throughput(trainer, sizes["probe"])
        if key == "packed":
            r["memory"] = memory_mb(trainer.device)
        out[key] = r
        del trainer
        gc.collect()  # its persistent workers stop
    return out


TARGETS = {"auto": ">= 0.9x", "packed": ">= 0.95x"}


def run_cpu(
    quick: bool,
    data: Path,
    pack: Path | None = None,
    rounds: int = 3,
    raw: Path | None = None,
    sizes: dict | None = None,
) -> list[dict]:
    """``rounds`` side-by-side rounds (the feeds' order rotated each round); every ratio is reported as the median
    over rounds with every round's value (the model step alone drifts by 10-20% between minutes on a shared 2-core
    VM, more than the effects measured). ``raw``: write every round's numbers there as JSON. ``sizes``: the run's
    (default :data:`QUICK` or :data:`FULL`)."""
    sizes = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory() as tmp:
        packing = None
        if pack is None:
            pack = Path(tmp) / "pack"
            packing = pack_for_bench(data, pack, sizes["img"])
        results = [_round(data, pack, sizes, shift=k) for k in range(max(1, rounds))]
    if raw is not None:
        raw.write_text(json.dumps({"rounds": results, "packing": packing}, indent=1) + "\n")

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in results)

    def spread(key: str, field: str = "ratio") -> str:
        return ", ".join(f"{r[key][field]:.3f}" for r in results)

    def median_row(name: str, key: str, field: str, digits: int, unit: str, target: bool = False) -> dict:
        """The median over rounds of ``field`` of feed ``key`` (with its target, if asked)."""
        return row(name, round(med(key, field), digits), unit, TARGETS.get(key, "") if target else "")

    rows = []
    for key, label, _ in FEEDS:
        workers = results[0][key]["workers"]
        rows.append(median_row(f"model step alone, around the {label} run (median)", key, "step", 1, "img/s"))
        rows.append(median_row(f"pretrain e2e, {label} ({workers} workers) (median)", key, "e2e", 1, "img/s"))
    for key, label, _ in FEEDS:
        name = f"e2e / model step: {label} (median of {len(results)}; rounds in order: {spread(key)})"
        rows.append(median_row(name, key, "ratio", 3, "x", target=True))
    for key, label, _ in FEEDS:
        name = f"fed / held step, paired blocks: {label} (rounds: {spread(key, 'paired')})"
        rows.append(median_row(name, key, "paired", 3, "x", target=True))
    for key, label, _ in FEEDS:
        name = f"  same, over the median step time (the earlier statistic): {label}"
        rows.append(median_row(name, key, "ratio_median_step", 3, "x"))
    for key, label, _ in FEEDS:
        rows.append(median_row(f"input wait share of the run, {label} (median)", key, "wait", 4, ""))
    drift = round(statistics.median(r[k]["drift"] for r in results for k in r), 3)
    rows += [
        row(
            f"step drift across a run, after / before (rounds: {spread('packed', 'drift')}, packed)",
            drift,
            "x",
        ),
        median_row("data pipeline alone, JPEG folder, 2 workers (median)", "folder2", "pipeline", 1, "img/s"),
        median_row(
            "data pipeline alone, packed (copy + batch crop/flip) (median)", "packed", "pipeline", 1, "img/s"
        ),
        row("pretrain peak memory (max RSS)", round(max(r["packed"]["memory"] for r in results), 0), "MiB"),
    ]
    if packing is not None:
        rows += [
            row(
                f"pack throughput ({sizes['img']} px, {packing['workers']} decoding worker(s))",
                round(packing["img_s"], 1),
                "img/s",
            ),
            row(f"pack bytes per image ({sizes['img']} px, no part cells)", round(packing["bytes"], 0), "B"),
            row("JPEG bytes per image (the source folder)", round(packing["jpeg_bytes"], 0), "B"),
        ]
    return rows


def run(
    quick: bool = False,
    data: str | None = None,
    pack: str | None = None,
    rounds: int = 3,
    raw: str | None = None,
    smoke: bool = False,
) -> list[dict]:
    """``smoke``: :data:`SMOKE`'s sizes on 16 generated images (unless ``data`` is given), one round."""
    rounds = 1 if quick or smoke else rounds  # a quick run (run_all --quick too): one round
    raw_path = Path(raw) if raw else None
    if smoke and not data:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _helpers_images import write_images

        with tempfile.TemporaryDirectory() as tmp:
            images = write_images(Path(tmp) / "imgs", count=16, size=40)
            return run_cpu(True, images, Path(pack) if pack else None, rounds, raw_path, SMOKE)
    data_path, pack_path = Path(data) if data else DATA, Path(pack) if pack else None
    return run_cpu(quick, data_path, pack_path, rounds, raw_path, SMOKE if smoke else None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="generated images, the micro MAE (the test suite's)")
    ap.add_argument("--data", default=None, help=f"ImageFolder of training images (default {DATA})")
    ap.add_argument(
        "--pack", default=None, help="a pack of --data at 96 px (default: packed here, and timed)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="side-by-side rounds (CPU); ratios are their medians"
    )
    ap.add_argument("--raw", default=None, help="CPU: write every round's numbers to this JSON file")
    args = ap.parse_args()
    for r in run(args.quick, args.data, args.pack, args.rounds, args.raw, args.smoke):
        print(f"{r['name']:<75} {r['value']:>10} {r['unit']:<6} {r['target']}")
