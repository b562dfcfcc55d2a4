"""Reproduce the paper's Tables 1, 3 and 4 at small scale on real images (issue 9).

Stages, each running the CLI verbs a user runs, in this process, from typed configs (:func:`semmae.cli.stage_config`
and ``dataclasses.replace``, run by :func:`semmae.cli.run_stage`):

1. ``data``      - class-balanced symlink subsets of ``--data``/train and /val (preset ``*_per_class``; 0 = all);
2. ``bootstrap`` - the part encoder: a random-masking MAE on the same train images (skipped with
                   ``--encoder-checkpoint``, e.g. iBOT / DINO weights; stands in for the paper's iBOT ViT-S/16);
3. ``parts``     - part learning (Sec. 3.1) and the part caches: learned parts on the MAE's patch grid and on the
                   finer grid (Table 1's patch-8 setting), and raw last-layer CLS-attention parts (Table 4,
                   ``semmae parts export --source attention``);
4. the grid      - every configuration x seed, seed-major: ``semmae pretrain`` with identical budgets, then
                   ``semmae linprobe --mode fast`` (cached center-crop features) and the weighted kNN (cosine,
                   k=20, T=0.07) on the same features; plus the encoder at its random initialisation per seed.

Identical configurations are run once and reported in every table that contains them (random = MAE = no parts;
adaptive gamma 2 = SemMAE = learned parts). Each finished run writes ``<out>/<stem>/per-run/<key>-seed<s>.json`` at
once and the summary (``<stem>.md``, ``.png``, ``.json``, see ``repro_report.py``) is rewritten after every run, so a
cut-short grid is usable and a rerun with the same ``--work`` resumes (finished runs are skipped).

Usage::

    python benchmarks/repro.py --preset cpu                         # ~90 min on 2 CPU cores
    python benchmarks/repro.py --preset gpu --device cuda           # one H100/H200, ~10 min
    python benchmarks/repro.py --preset cpu --only table4 --seeds 1 # one table, one seed
    python benchmarks/repro.py --preset anchor --only anchor        # the issue's MAE anchor (random masking)
    python benchmarks/repro.py --preset cpu --only flip             # MAE and SemMAE with SemMAE's flip-only augmentation
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

# Before torch loads: with the default (active) OpenMP wait policy, 2 threads on a shared 2-core machine spin
# against each other; measured here under load, a tiny-ViT training step ran at 5.7 img/s with 2 threads vs 51
# img/s with OMP_WAIT_POLICY=PASSIVE (and the fast linear probe at 4.2 vs 0.04 s per epoch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import repro_report  # noqa: E402  (sibling module, benchmarks/ is not a package)

from semmae.cli import guard, run_stage, stage_config  # noqa: E402
from semmae.data.subset import make_subset  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "imagenette2_96"
TABLES = ("table1", "table3", "table4", "anchor", "flip")
EVAL_ONLY = ("eval_crop_pct", "linprobe_blrs")
PARTS_PRESET = "parts/tiny_cpu"  # preset fields that change only the evaluation of finished pretraining runs


# ------------------------------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    """One budget for every run of the grid (``benchmarks/repro_presets/<name>.yaml``)."""

    model: str  # registered MAE name (semmae.models.create_model); its patch is the default patch
    img_size: int
    depth: int
    decoder_depth: int
    fine_patch: int  # Table 1's finer patch (paper: 8 at 224 px); enters with ``fg_keep`` of the cells
    fg_keep: float
    train_per_class: int  # 0 = every image
    val_per_class: int
    batch_size: int
    blr: float
    epochs: int  # every grid run
    warmup_epochs: int
    bootstrap_epochs: int  # random-masking MAE that becomes the part encoder
    num_parts: int
    blur_kernel: int
    parts_epochs: int
    linprobe_epochs: int
    eval_batch_size: int
    precision: str
    num_workers: int
    seeds: int
    name: str = ""
    # eval view: Resize(img / crop) + CenterCrop(img); 1.0 = the whole short side
    eval_crop_pct: float = 0.875
    # the fast probe's base learning rates (empty: `semmae linprobe`'s default sweep)
    linprobe_blrs: tuple[float, ...] = ()

    @staticmethod
    def load(name_or_path: str) -> Preset:
        import yaml

        path = Path(name_or_path)
        if not path.suffix:
            path = HERE / "repro_presets" / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in (HERE / "repro_presets").glob("*.yaml"))
            raise SystemExit(f"repro: no preset {name_or_path!r} (known: {', '.join(known)})")
        raw = yaml.safe_load(path.read_text()) or {}
        names = {f.name for f in fields(Preset)}
        unknown = set(raw) - names
        if unknown:
            raise SystemExit(f"repro: preset {path} has unknown keys {sorted(unknown)}")
        return Preset(**{**raw, "name": raw.get("name", path.stem)})


# ------------------------------------------------------------------------------------------------------ the grid
@dataclass(frozen=True)
class GridConfig:
    """One pretraining configuration and the table rows it fills."""

    key: str
    masking: str  # semmae.masking.build_masking name
    gamma: float = 2.0
    parts: str = ""  # "" (no cache), "learned" or "attention"
    fine: bool = False  # finer patch + keep the most-foreground ``fg_keep`` of the cells
    augment: str = "crop-flip"  # `semmae pretrain --augment`: MAE's crop + flip, or SemMAE's flip only
    rows: tuple[tuple[str, str], ...] = ()  # (table, row label)

    @property
    def tables(self) -> set[str]:
        return {t for t, _ in self.rows}


GRID: tuple[GridConfig, ...] = (
    GridConfig(
        "random",
        "random",
        rows=(
            ("table3", "random"),
            ("table1", "MAE, patch P"),
            ("table4", "no parts (random masking)"),
            ("anchor", "MAE (random masking)"),
        ),
    ),
    GridConfig("per_part", "per-part", parts="learned", rows=(("table3", "per-part (alpha = 0)"),)),
    GridConfig("whole_part", "whole-part", parts="learned", rows=(("table3", "whole-part (alpha = 1)"),)),
    GridConfig(
        "adaptive_rev_g1",
        "adaptive-reverse",
        gamma=1.0,
        parts="learned",
        rows=(("table3", "adaptive 1 -> 0 (gamma = 1)"),),
    ),
    GridConfig(
        "adaptive_g1",
        "adaptive",
        gamma=1.0,
        parts="learned",
        rows=(("table3", "adaptive 0 -> 1 (gamma = 1)"),),
    ),
    GridConfig(
        "adaptive_g2",
        "adaptive",
        gamma=2.0,
        parts="learned",
        rows=(
            ("table3", "adaptive 0 -> 1 (gamma = 2)"),
            ("table1", "SemMAE, patch P"),
            ("table4", "learned parts (SemMAE)"),
        ),
    ),
    GridConfig(
        "adaptive_g3",
        "adaptive",
        gamma=3.0,
        parts="learned",
        rows=(("table3", "adaptive 0 -> 1 (gamma = 3)"),),
    ),
    GridConfig("mae_fine", "random", parts="learned", fine=True, rows=(("table1", "MAE, patch P/2 + keep"),)),
    GridConfig(
        "semmae_fine",
        "adaptive",
        gamma=2.0,
        parts="learned",
        fine=True,
        rows=(("table1", "SemMAE, patch P/2 + keep"),),
    ),
    GridConfig(
        "attention_g2", "adaptive", gamma=2.0, parts="attention", rows=(("table4", "raw-attention parts"),)
    ),
    # the paper's augmentation (Sec. 4.1: "only random horizontal flipping"): not in the default grid
    GridConfig("random_flip", "random", augment="flip", rows=(("flip", "random, flip only"),)),
    GridConfig(
        "adaptive_g2_flip",
        "adaptive",
        gamma=2.0,
        parts="learned",
        augment="flip",
        rows=(("flip", "adaptive 0 -> 1 (gamma = 2), flip only"),),
    ),
)
KEPT_METRICS = (
    "knn_top1",
    "knn_top5",
    "linprobe_top1",
    "linprobe_top5",
    "linprobe_best_blr",
    "linprobe_best_on_edge",
    "logreg_top1",
    "logreg_converged",
)
RANDOM_INIT = "random_init"  # eval-only row: the encoder at its initialisation (per seed)


def select_grid(only: list[str] | None) -> list[GridConfig]:
    """Configurations in any table of ``only`` (table names or config keys); all of table 1/3/4 by default."""
    wanted = set(only or ("table1", "table3", "table4"))
    keys = {c.key for c in GRID}
    bad = wanted - keys - set(TABLES)
    if bad:
        raise SystemExit(f"repro: --only {sorted(bad)}: not a table ({', '.join(TABLES)}) or config key")
    return [c for c in GRID if c.key in wanted or c.tables & wanted]


# -------------------------------------------------------------------------------------------------- the harness
def device_slug(device: str) -> str:
    """Short machine name for the results file: ``cpu2`` (2 cores) or the GPU model (``h100``)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        for tag in ("h200", "h100", "a100", "l40s", "l4", "a10", "v100", "t4"):
            if tag in name:
                return tag
        return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")
    return f"cpu{os.cpu_count()}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def split_subset(src: Path, dst: Path, per_class: int) -> Path:
    """``per_class`` images of every class of ``src`` under ``dst`` (:func:`semmae.data.subset.make_subset`,
    seed 0; a short class gives all it has), or ``src`` itself for 0."""
    if per_class <= 0:
        return src
    if (dst / ".complete").exists():  # written by this script before the library owned subsets: same files
        return dst
    return make_subset(src, dst, per_class, seed=0, allow_fewer=True).out


class Harness:
    """Paths, stages, the grid loop and its bookkeeping."""

    def __init__(self, args: argparse.Namespace, preset: Preset):
        self.args, self.p = args, preset
        self.configs = select_grid(args.only)
        self.seeds = list(range(args.seed, args.seed + (args.seeds or preset.seeds)))
        self.work = Path(args.work or REPO / "runs" / f"repro-{preset.name}").resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        state_path = self.work / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
        self.device = device
        # a work folder started before a field existed holds its default; evaluation-only fields may change
        # (finished runs keep their records; the summary flags runs evaluated with another view)
        defaults = {f.name: f.default for f in fields(Preset) if f.default is not MISSING}
        started = {**defaults, **state.get("preset", asdict(preset))}

        def training(p: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in p.items() if k not in EVAL_ONLY}

        if training(started) != training(asdict(preset)):
            raise SystemExit(
                f"repro: {self.work} was started with another preset ({state['preset']}); "
                "use another --work (or the same preset) so finished runs are not mixed with new ones"
            )
        state["preset"] = asdict(preset)
        state.setdefault("date", dt.date.today().isoformat())
        state.setdefault("device", device_slug(device))
        state_path.write_text(json.dumps(state, indent=1))
        self.stem = f"{state['date']}-{preset.name}-{state['device']}"
        self.out = Path(args.out).resolve()
        self.runs_dir = self.out / self.stem / "per-run"  # not runs/: .gitignore ignores those
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.stage_seconds: dict[str, float] = {}

    # -- small helpers -----------------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """Where the part caches are written."""
        return self.work / "parts"

    @property
    def patch(self) -> int:
        return self._model_spec()[0]

    @property
    def width(self) -> int:
        return self._model_spec()[1]

    def _model_spec(self) -> tuple[int, int]:
        """(patch size, encoder width) of the preset's registered model, from the registry's table."""
        from semmae.models import model_config

        model = model_config(self.p.model, img_size=self.p.img_size)
        return model.patch_size, int(model.embed_dim)

    def common(self) -> dict[str, Any]:
        return {"device": self.device, "num_workers": self.p.num_workers}

    def log(self, msg: str) -> None:
        print(f"[repro {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def staged(self, name: str, fn) -> Any:
        """Run ``fn`` once: its result is kept in ``work/stages/<name>.json`` and reused on a rerun."""
        marker = self.work / "stages" / f"{name}.json"
        if marker.exists():
            rec = json.loads(marker.read_text())
            self.stage_seconds[name] = rec["seconds"]
            return rec["result"]
        self.log(f"stage {name} ...")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"seconds": seconds, "result": result}, indent=1))
        self.stage_seconds[name] = seconds
        self.log(f"stage {name} done in {seconds:.0f} s")
        return result

    @staticmethod
    def latest_checkpoint(run_dir: Path) -> Path:
        from semmae.engine.checkpoint import CheckpointManager

        ckpt = CheckpointManager(run_dir).latest()
        if ckpt is None:
            raise RuntimeError(f"no checkpoint in {run_dir}")
        return ckpt

    # -- stages ------------------------------------------------------------------------------------------------
    def stage_data(self) -> dict[str, str]:
        src = Path(self.args.data).resolve()
        for split in ("train", "val"):
            if not (src / split).is_dir():
                raise SystemExit(
                    f"repro: {src / split} does not exist (expected <data>/train and <data>/val)"
                )
        train = split_subset(src / "train", self.work / "data" / "train", self.p.train_per_class)
        val = split_subset(src / "val", self.work / "data" / "val", self.p.val_per_class)
        return {"train": str(train), "val": str(val)}

    def pretrain_config(self, out: Path, cfg: GridConfig, seed: int, epochs: int, cache: str | None) -> Any:
        """``semmae pretrain``'s config of one run: the preset's budget, then the grid row's masking and patch."""
        p = self.p
        budget = stage_config(
            "pretrain",
            data=self.data["train"],
            model=p.model,
            img_size=p.img_size,
            depth=p.depth,
            decoder_depth=p.decoder_depth,
            batch_size=p.batch_size,
            blr=p.blr,
            resume="auto",
            keep_last=1,
            log_every=5,
            precision=p.precision if self.device != "cpu" else "fp32",
            progress=False,
            **self.common(),
        )
        fine = {"patch_size": p.fine_patch, "fg_keep": p.fg_keep} if cfg.fine else {}
        return dataclasses.replace(
            budget,
            out=str(out),
            masking=cfg.masking,
            gamma=cfg.gamma,
            parts=cache,
            augment=cfg.augment,
            epochs=epochs,
            warmup_epochs=min(p.warmup_epochs, epochs),
            vis_every=max(epochs, 1),
            seed=seed,
            **fine,
        )

    def stage_bootstrap(self) -> str:
        if self.args.encoder_checkpoint:
            return str(Path(self.args.encoder_checkpoint).resolve())
        out = self.work / "bootstrap"
        cfg = GridConfig("bootstrap", "random")
        run_stage("pretrain", self.pretrain_config(out, cfg, self.args.seed, self.p.bootstrap_epochs, None))
        return str(self.latest_checkpoint(out))

    def stage_parts(self) -> str:
        from semmae.parts.train import CHECKPOINT_NAME

        out = self.work / "parts" / "run"
        cfg = stage_config(
            "parts train",
            PARTS_PRESET,  # the demo's recipe: cached tokens, light decoder, cosine Eq. 2, softmax over parts
            data=self.data["train"],
            out=str(out),
            encoder_checkpoint=self.encoder_ckpt,
            **({"encoder": self.args.encoder} if self.args.encoder else {}),
            img_size=self.p.img_size,
            num_parts=self.p.num_parts,
            blur_kernel=self.p.blur_kernel,
            epochs=self.p.parts_epochs,
            batch_size=self.p.batch_size,
            seed=self.args.seed,
            resume="auto",
            **self.common(),
        )
        run_stage("parts train", cfg)
        return str(out / CHECKPOINT_NAME)

    def stage_cache(self, kind: str, grid: int, split: str = "train") -> str:
        """Part cache of a split: ``learned`` (``semmae parts export``), raw-``attention`` or ground-truth ``masks`` parts. Pretraining
        reads the train split's; the kept-quarter evaluation of the patch-P/2 rows reads both splits' foreground."""
        suffix = "" if split == "train" else f"_{split}"
        cache = self.cache_dir / f"{kind}_grid{grid}{suffix}.cache"
        if cache.exists():
            return str(cache)
        # learned: the part checkpoint's parts; attention: the argmax over the part encoder's CLS-attention heads
        # masks: the oracle parts of a dataset with ground-truth label PNGs (``data[f"masks_{split}"]``)
        if kind == "learned":
            source = {"checkpoint": self.parts_ckpt}
        elif kind == "masks":
            source = {"masks": self.data[f"masks_{split}"]}
        else:
            source = {"encoder_checkpoint": self.encoder_ckpt, "img_size": self.p.img_size}
        cfg = stage_config(
            "parts export",
            source=kind,
            data=self.data[split],
            grid=grid,
            out=str(cache),
            batch_size=self.p.eval_batch_size,
            **source,
            **self.common(),
        )
        run_stage("parts export", cfg)
        return str(cache)

    # -- one run -----------------------------------------------------------------------------------------------
    def evaluate(self, out: Path, seed: int, source: dict[str, Any]) -> dict[str, Any]:
        """Fast linear probe (writes ``features.pt``), then the weighted kNN and the logistic-regression probe on
        those same features. ``source``: the probe's encoder fields (checkpoint, random init, tokens)."""
        from semmae.eval.knn import knn_accuracy
        from semmae.utils.io import load_checkpoint

        probe_dir = out / "linprobe"
        cfg = stage_config(
            "linprobe",
            train=self.data["train"],
            val=self.data["val"],
            **source,
            img_size=self.p.img_size,
            batch_size=self.p.eval_batch_size,
            mode="fast",
            crop_pct=self.p.eval_crop_pct,
            epochs=self.p.linprobe_epochs,
            warmup_epochs=self.p.linprobe_epochs // 10,
            seed=seed,
            out=str(probe_dir),
            **({"blrs": [float(b) for b in self.p.linprobe_blrs]} if self.p.linprobe_blrs else {}),
            **self.common(),
        )
        run_stage("linprobe", cfg)
        probe = json.loads((probe_dir / "results.json").read_text())
        probe = probe.get("metrics", probe)
        feats = load_checkpoint(probe_dir / "features.pt")
        knn = knn_accuracy(
            feats["train_x"],
            feats["train_y"],
            feats["val_x"],
            feats["val_y"],
            20,
            0.07,
            len(feats["classes"]),
        )
        logreg_top1, logreg_converged = logistic_probe_fit(feats)
        blrs = [float(b) for b in cfg.blrs]
        return {
            "knn_top1": knn["top1"],
            "knn_top5": knn["top5"],
            "linprobe_top1": float(probe["top1"]),
            "linprobe_top5": _top5(probe),
            "linprobe_best_blr": probe.get("best_blr"),
            "linprobe_blrs": blrs,
            "linprobe_best_on_edge": sweep_edge(probe.get("best_blr"), blrs),
            "logreg_top1": logreg_top1,
            "logreg_converged": logreg_converged,
            "features": str(probe_dir / "features.pt"),
            "num_train": int(feats["train_x"].shape[0]),
            "num_val": int(feats["val_x"].shape[0]),
        }

    def run_one(self, cfg: GridConfig, seed: int) -> None:
        record_path = self.runs_dir / f"{cfg.key}-seed{seed}.json"
        if record_path.exists():
            return
        run_dir = self.work / "runs" / f"{cfg.key}-seed{seed}"
        cache = None
        if cfg.parts:
            grid = self.p.img_size // (self.p.fine_patch if cfg.fine else self.patch)
            cache = self.caches[(cfg.parts, grid)]
        t0 = time.perf_counter()
        run_stage("pretrain", self.pretrain_config(run_dir, cfg, seed, self.p.epochs, cache))
        t1 = time.perf_counter()
        ckpt = self.latest_checkpoint(run_dir)
        # every patch (the default for patch-P rows; written explicitly so patch-P/2 checkpoints are not kept by auto)
        metrics = self.evaluate(run_dir / "eval", seed, {"checkpoint": str(ckpt), "tokens": "all"})
        if (
            cfg.fine
        ):  # the paper's protocol for its 8x8 rows: the kept quarter, foreground from the part caches
            metrics["kept"] = self.evaluate_kept(run_dir, cfg, seed, ckpt)
        t2 = time.perf_counter()
        logs = _read_log(run_dir / "log.jsonl")
        record = {
            **self.base_record(cfg.key, seed),
            "masking": cfg.masking,
            "gamma": cfg.gamma,
            "parts": cfg.parts or None,
            "patch": self.p.fine_patch if cfg.fine else self.patch,
            "fg_keep": self.p.fg_keep if cfg.fine else 1.0,
            "augment": cfg.augment,
            "rows": [list(r) for r in cfg.rows],
            **metrics,
            "final_loss": logs[-1].get("loss") if logs else None,
            "img_per_s": _median([r["img_per_s"] for r in logs if r.get("img_per_s")]),
            "pretrain_seconds": t1 - t0,
            "eval_seconds": t2 - t1,
            "checkpoint": str(ckpt),
        }
        self.finish(record_path, record)

    def evaluate_kept(self, run_dir: Path, cfg: GridConfig, seed: int, ckpt: Path | str) -> dict[str, Any]:
        """Kept-quarter evaluation of a patch-P/2 run (paper Sec. 4.1): linear probe, kNN and logistic regression
        on the class token of the most-foreground ``fg_keep`` of the patches, foreground from the part caches."""
        grid = self.p.img_size // self.p.fine_patch
        kept = self.evaluate(
            run_dir / "eval_kept",
            seed,
            {
                "checkpoint": str(ckpt),
                "tokens": "kept",
                "keep_fraction": self.p.fg_keep,
                "train_parts": self.caches[(cfg.parts, grid)],
                "val_parts": self.caches[(cfg.parts, grid, "val")],
            },
        )
        return {k: kept[k] for k in KEPT_METRICS}

    def backfill_kept(self) -> None:
        """Add the kept-quarter evaluation to patch-P/2 records written before it existed (their checkpoints are
        re-evaluated; nothing is pretrained again)."""
        from semmae.utils.io import atomic_write_json

        fine = {c.key: c for c in self.configs if c.fine}
        for path in sorted(self.runs_dir.glob("*.json")):
            rec = json.loads(path.read_text())
            cfg = fine.get(rec["key"])
            if cfg is None or "kept" in rec or not Path(rec.get("checkpoint", "")).is_file():
                continue
            self.log(f"{rec['key']} seed {rec['seed']}: adding the kept-quarter evaluation")
            run_dir = self.work / "runs" / f"{rec['key']}-seed{rec['seed']}"
            rec["kept"] = self.evaluate_kept(run_dir, cfg, rec["seed"], rec["checkpoint"])
            atomic_write_json(path, rec)

    def run_random_init(self, seed: int) -> None:
        record_path = self.runs_dir / f"{RANDOM_INIT}-seed{seed}.json"
        if record_path.exists():
            return
        ref = self.work / "runs" / f"random-seed{seed}"
        ref_ckpt = self.latest_checkpoint(ref) if ref.exists() else Path(self.encoder_ckpt or "")
        if not ref_ckpt.is_file():
            return
        t0 = time.perf_counter()
        metrics = self.evaluate(
            self.work / "runs" / f"{RANDOM_INIT}-seed{seed}",
            seed,
            {"random_init": True, "checkpoint": str(ref_ckpt), "tokens": "all"},
        )
        record = {
            **self.base_record(RANDOM_INIT, seed),
            "patch": self.patch,
            "rows": [["init", "random init (no pretraining)"]],
            **metrics,
            "pretrain_seconds": 0.0,
            "eval_seconds": time.perf_counter() - t0,
        }
        self.finish(record_path, record)

    def base_record(self, key: str, seed: int) -> dict[str, Any]:
        return {
            "key": key,
            "seed": seed,
            "preset": asdict(self.p),
            "device": self.device,
            "commit": git_commit(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def finish(self, path: Path, record: dict[str, Any]) -> None:
        from semmae.utils.io import atomic_write_json

        atomic_write_json(path, record)
        self.log(
            f"{record['key']} seed {record['seed']}: kNN {record['knn_top1']:.1f} %, linear probe "
            f"{record['linprobe_top1']:.1f} %, logistic regression {record['logreg_top1']:.1f} % (pretrain {record['pretrain_seconds']:.0f} s, "
            f"eval {record['eval_seconds']:.0f} s)"
        )
        self.summarise()

    def summarise(self) -> None:
        planned = [(c.key, s) for s in self.seeds for c in self.configs] + [
            (RANDOM_INIT, s) for s in self.seeds
        ]
        repro_report.write_summary(
            self.out,
            self.stem,
            self.runs_dir,
            planned=planned,
            preset=asdict(self.p),
            stages=self.stage_seconds,
            data=str(Path(self.args.data).resolve()),
            patch=self.patch,
            width=self.width,
            planned_rows=[r for c in self.configs for r in c.rows]
            + [(t, label + repro_report.KEPT_SUFFIX) for c in self.configs if c.fine for t, label in c.rows],
        )

    # -- driver ------------------------------------------------------------------------------------------------
    def backfill_logreg(self) -> None:
        """Add ``logreg_top1`` to records written before that metric existed (from their cached features)."""
        from semmae.utils.io import atomic_write_json, load_checkpoint

        for path in sorted(self.runs_dir.glob("*.json")):
            rec = json.loads(path.read_text())
            if "logreg_top1" in rec:
                continue
            sub = "linprobe" if rec["key"] == RANDOM_INIT else "eval/linprobe"
            feats_path = self.work / "runs" / f"{rec['key']}-seed{rec['seed']}" / sub / "features.pt"
            if feats_path.is_file():
                rec["logreg_top1"] = logistic_probe(load_checkpoint(feats_path))
                rec["features"] = str(feats_path)
                atomic_write_json(path, rec)

    def run(self) -> Path:
        self.backfill_logreg()
        if self.args.summarise_only:
            self.stage_seconds = _stage_seconds(self.work)
            self.summarise()
            return self.out / f"{self.stem}.md"
        t_all = time.perf_counter()
        self.data = self.staged("data", self.stage_data)
        need_parts = sorted({c.parts for c in self.configs if c.parts})
        self.encoder_ckpt = ""
        self.caches: dict[tuple, str] = {}
        if need_parts:
            self.encoder_ckpt = self.staged("bootstrap", self.stage_bootstrap)
            self.parts_ckpt = self.staged("parts", self.stage_parts)
            grids = {
                (c.parts, self.p.img_size // (self.p.fine_patch if c.fine else self.patch))
                for c in self.configs
            }
            for kind, grid in sorted(g for g in grids if g[0]):
                self.caches[(kind, grid)] = self.staged(
                    f"cache_{kind}_grid{grid}", lambda k=kind, g=grid: self.stage_cache(k, g)
                )
            for kind in sorted(
                {c.parts for c in self.configs if c.fine}
            ):  # kept-quarter eval: val foreground
                grid = self.p.img_size // self.p.fine_patch
                self.caches[(kind, grid, "val")] = self.staged(
                    f"cache_{kind}_grid{grid}_val", lambda k=kind, g=grid: self.stage_cache(k, g, "val")
                )
            self.backfill_kept()
        self.summarise()
        todo = [(c, s) for s in self.seeds for c in [None, *self.configs]]  # None: random init, per seed
        for i, (cfg, seed) in enumerate(todo, 1):
            name = cfg.key if cfg else RANDOM_INIT
            if (self.runs_dir / f"{name}-seed{seed}.json").exists():
                continue
            self.log(f"[{i}/{len(todo)}] {name} seed {seed} ...")
            if cfg is None:
                random_done = (self.runs_dir / f"random-seed{seed}.json").exists()
                if any(c.key == "random" for c in self.configs) and not random_done:
                    continue  # evaluated right after the random run of this seed (same architecture)
                self.run_random_init(seed)
            else:
                self.run_one(cfg, seed)
                if cfg.key == "random":
                    self.run_random_init(seed)
        self.summarise()
        self.log(f"finished in {time.perf_counter() - t_all:.0f} s: {self.out / (self.stem + '.md')}")
        return self.out / f"{self.stem}.md"


def sweep_edge(best: float | None, swept: list[float]) -> str | None:
    """ "top" / "bottom" when a probe's chosen learning rate is the largest / smallest of its sweep (the optimum may
    lie outside it: the probe has not converged in its hyperparameter), else None."""
    if best is None or len(swept) < 2:
        return None
    if best >= max(swept):
        return "top"
    return "bottom" if best <= min(swept) else None


def _top5(results: dict) -> float | None:
    """A linear probe's top-5, None where it was not recorded (5 classes or fewer, issue 29)."""
    return None if results.get("top5") is None else float(results["top5"])


def logistic_probe(feats: dict[str, Any], max_iter: int = 1000) -> float:
    """Top-1 (percent) of a standardised multinomial logistic regression on cached features (the issue's anchor
    probe; unlike the few-hundred-step fast probe it is trained to convergence, L-BFGS, C = 1)."""
    return logistic_probe_fit(feats, max_iter)[0]


def logistic_probe_fit(feats: dict[str, Any], max_iter: int = 1000) -> tuple[float, bool]:
    """:func:`logistic_probe` and whether L-BFGS converged (stopped before ``max_iter``)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as the flag instead
        clf.fit(feats["train_x"].float().cpu().numpy(), feats["train_y"].cpu().numpy())
    pred = clf.predict(feats["val_x"].float().cpu().numpy())
    converged = bool((clf[-1].n_iter_ < max_iter).all())
    return float((pred == feats["val_y"].cpu().numpy()).mean() * 100.0), converged


def _stage_seconds(work: Path) -> dict[str, float]:
    return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((work / "stages").glob("*.json"))}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return values[len(values) // 2] if values else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", help="cpu | gpu | anchor | smoke, or a YAML path")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="ImageFolder root with train/ and val/")
    ap.add_argument("--seeds", type=int, default=0, help="seeds per configuration (0: the preset's)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--only", nargs="+", help=f"tables ({', '.join(TABLES)}) or configuration keys")
    ap.add_argument("--out", default=str(HERE / "results"), help="where <date>-<preset>-<device>.* go")
    ap.add_argument("--work", default="", help="run folder (default runs/repro-<preset>); reuse it to resume")
    ap.add_argument("--encoder-checkpoint", default="", help="iBOT/DINO/MAE weights for part learning")
    ap.add_argument(
        "--encoder", default="", help="timm architecture of --encoder-checkpoint if it cannot tell"
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument(
        "--summarise-only", action="store_true", help="only rewrite the summary from the finished runs' JSON"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = Preset.load(args.preset)
    if args.encoder_checkpoint and not Path(args.encoder_checkpoint).is_file():
        raise SystemExit(f"repro: --encoder-checkpoint {args.encoder_checkpoint} does not exist")

    def run() -> None:
        Harness(args, preset).run()

    return guard(
        "benchmarks/repro.py", run
    )  # as the CLI: a failed stage is one line, its traceback in error.log


if __name__ == "__main__":
    sys.exit(main())
