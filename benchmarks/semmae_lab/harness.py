"""The reproduction harness (issue 9): the paper's Tables 1, 3 and 4 at small scale on real images
(``benchmarks/repro.py`` is its command line; :mod:`semmae_lab.campaign` drives the same stages from a plan).

Stages, each running the CLI verbs a user runs, in this process, from typed configs (:func:`semmae.cli.stage_config`
and ``dataclasses.replace``, run by :func:`semmae.cli.run_stage`):

1. ``data``      - class-balanced symlink subsets of the data's train and val splits (preset ``*_per_class``);
2. ``part_encoder`` - the part encoder: a random-masking MAE on the same train images (skipped with an encoder
                   checkpoint, e.g. iBOT / DINO weights; stands in for the paper's iBOT ViT-S/16); its folder is
                   ``bootstrap/`` and its done-file was ``bootstrap`` before the rename (read on resume);
3. ``parts``     - part learning (Sec. 3.1) and the part caches: learned parts on the MAE's patch grid and on the
                   finer grid (Table 1's patch-8 setting), raw last-layer CLS-attention parts (Table 4) or the
                   ground-truth parts of a synthetic set;
4. the grid      - every configuration x seed, seed-major: ``semmae pretrain`` with identical budgets, then
                   ``semmae linprobe --mode fast`` (cached center-crop features) and the weighted kNN and the
                   logistic regression on the same features (:mod:`semmae_lab.probes`); plus the encoder at
                   its random initialisation per seed.

The stages before the grid run on the library's one stage runner (:class:`semmae.engine.stage_runner.StageRunner`,
as the demo's do): each records its result in ``<work>/stages/<name>.json`` and a rerun reads it back. Each finished
run writes ``<out>/<stem>/per-run/<key>-seed<s>.json`` at once and the summary (:mod:`semmae_lab.repro_report`) is
rewritten after every run, so a cut-short grid is usable and a rerun with the same work folder resumes (finished
runs are skipped).

The stage configs are the harness's own, not the demo's, where the two differ for a reason: the data (class-balanced
subsets of a real dataset here, the demo generates its synthetic set), the part encoder's and the grid's pretraining
(a :class:`~semmae_lab.preset.Preset` budget with its precision, one kept checkpoint and a log every 5 steps; the
demo's logs every step and keeps the default checkpoints: one builder would change the demo's files) and the
evaluation (the fast probe's features read by the lab's kNN and logistic regression; the demo runs ``semmae knn``
and its own probe preset). Part learning is the same recipe in both, built by one function
(:func:`semmae.demo.recipe.part_learning_config`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import subprocess
import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from semmae.cli import run_stage, stage_config
from semmae.demo.recipe import part_learning_config
from semmae.engine.run_checkpoints import latest_checkpoint
from semmae.engine.stage_runner import Stage, StageRunner
from semmae.errors import UserError
from semmae.utils.io import atomic_write_json
from semmae_lab import repro_report
from semmae_lab.grid import KEPT_METRICS, RANDOM_INIT, GridConfig, select_grid
from semmae_lab.preset import EVAL_ONLY, Preset
from semmae_lab.subsets import split_subset

#: the part encoder's folder under ``--work``; and the former names of its done-file (``stages/<name>.json``), read
#: on resume. "bootstrap" there is the old name of the stage, not the ``semmae bootstrap`` verb.
PART_ENCODER_DIR = "bootstrap"
PART_ENCODER_WAS = ("bootstrap",)
#: GPU names shortened for the results file's stem
GPU_TAGS = ("h200", "h100", "a100", "l40s", "l4", "a10", "v100", "t4")


def device_slug(device: str) -> str:
    """Short machine name for the results file: ``cpu2`` (2 cores) or the GPU model (``h100``)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        for tag in GPU_TAGS:
            if tag in name:
                return tag
        return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")
    return f"cpu{os.cpu_count()}"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` where there is one, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def git_commit(repo: Path | None) -> str:
    """The short commit of ``repo``'s checkout ("" outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return values[len(values) // 2] if values else None


class Harness:
    """Paths, stages, the grid loop and its bookkeeping.

    ``args``: ``data`` (folder with ``train/`` and ``val/``), ``seed`` (first seed), ``seeds`` (0 = the preset's),
    ``only`` (tables or config keys), ``work`` (run folder), ``out`` (results), ``encoder_checkpoint``, ``encoder``,
    ``device``; ``repo``: the checkout whose commit the records carry."""

    def __init__(self, args: Any, preset: Preset, repo: Path | None = None):
        work = Path(args.work or Path("runs") / f"repro-{preset.name}").resolve()
        device = resolve_device(args.device)
        state = self._pin_preset(work, preset, device)
        stem = f"{state['date']}-{preset.name}-{state['device']}"
        self.setup(
            preset,
            select_grid(args.only),
            list(range(args.seed, args.seed + (args.seeds or preset.seeds))),
            work=work,
            out=Path(args.out).resolve(),
            stem=stem,
            keep=Path(args.out).resolve() / stem,
            device=device,
            data=args.data,
            first_seed=args.seed,
            encoder_checkpoint=args.encoder_checkpoint,
            encoder=args.encoder,
            repo=repo,
        )

    def setup(
        self,
        preset: Preset,
        configs: list[GridConfig],
        seeds: list[int],
        *,
        work: Path,
        out: Path,
        stem: str,
        keep: Path,
        device: str,
        data: str,
        first_seed: int,
        encoder_checkpoint: str = "",
        encoder: str = "",
        repo: Path | None = None,
    ) -> None:
        """What every driver of the stages sets: the budget, the runs, the folders (``keep``: what outlives the
        work folder - per-run records under ``keep/per-run``) and the inputs."""
        self.p, self.configs, self.seeds = preset, configs, seeds
        self.work, self.out, self.stem, self.keep = work, out, stem, keep
        self.work.mkdir(parents=True, exist_ok=True)
        self.runs_dir = keep / "per-run"  # not runs/: .gitignore ignores those
        self.device = device
        self.data_root = str(Path(data).resolve())
        self.first_seed = first_seed
        self.encoder_arg, self.encoder_name = encoder_checkpoint, encoder
        self.repo = repo
        # the stages before the grid: done-files work/stages/<name>.json; their seconds go into the summary
        self.runner = StageRunner(work, self.log)
        self.encoder_ckpt, self.parts_ckpt = "", ""
        self.caches: dict[tuple, str] = {}

    @staticmethod
    def _pin_preset(work: Path, preset: Preset, device: str) -> dict[str, Any]:
        """``work/state.json``: the preset a work folder was started with; evaluation-only fields may change
        (finished runs keep their records; the summary flags runs evaluated with another view)."""
        work.mkdir(parents=True, exist_ok=True)
        state_path = work / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        # a work folder started before a field existed holds its default
        defaults = {f.name: f.default for f in fields(Preset) if f.default is not MISSING}
        started = {**defaults, **state.get("preset", asdict(preset))}

        def training(p: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in p.items() if k not in EVAL_ONLY}

        if training(started) != training(asdict(preset)):
            raise UserError(
                f"{work} was started with another preset ({state['preset']}); "
                "use another --work (or the same preset) so finished runs are not mixed with new ones"
            )
        state["preset"] = asdict(preset)
        state.setdefault("date", dt.date.today().isoformat())
        state.setdefault("device", device_slug(device))
        state_path.write_text(json.dumps(state, indent=1))
        return state

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

    def grid_size(self, fine: bool) -> int:
        """Patches per side of a run with the preset's fine patch (``fine``) or the model's."""
        return self.p.img_size // (self.p.fine_patch if fine else self.patch)

    def common(self) -> dict[str, Any]:
        return {"device": self.device, "num_workers": self.p.num_workers}

    def log(self, msg: str) -> None:
        print(f"[repro {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # -- stages ------------------------------------------------------------------------------------------------
    def stage_data(self) -> dict[str, str]:
        src = Path(self.data_root)
        for split in ("train", "val"):
            if not (src / split).is_dir():
                raise UserError(f"{src / split} does not exist (expected <data>/train and <data>/val)")
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

    def part_encoder_stage(self) -> Stage:
        """The part encoder's stage (:meth:`stage_part_encoder`), its done-file read under its former name too."""
        return Stage("part_encoder", self.stage_part_encoder, was=PART_ENCODER_WAS)

    def stage_part_encoder(self) -> str:
        """The part encoder: the given one, else a short random-masking MAE trained here (its folder keeps the
        name ``bootstrap``, :data:`PART_ENCODER_DIR`, so that work folders written before still resume)."""
        if self.encoder_arg:
            return str(Path(self.encoder_arg).resolve())
        out = self.work / PART_ENCODER_DIR
        cfg = GridConfig("part_encoder", "random")
        run_stage("pretrain", self.pretrain_config(out, cfg, self.first_seed, self.p.bootstrap_epochs, None))
        return str(latest_checkpoint(out))

    def stage_parts(self) -> str:
        """Part learning: the demo's recipe on the preset's budget (:func:`~semmae.demo.recipe.part_learning_config`)."""
        from semmae.parts.train import CHECKPOINT_NAME

        out = self.work / "parts" / "run"
        cfg = part_learning_config(
            self.p,
            data=self.data["train"],
            out=str(out),
            encoder_checkpoint=self.encoder_ckpt,
            encoder=self.encoder_name,
            seed=self.first_seed,
            **self.common(),
        )
        run_stage("parts train", cfg)
        return str(out / CHECKPOINT_NAME)

    def stage_cache(self, kind: str, grid: int, split: str = "train") -> str:
        """Part cache of a split: ``learned`` (``semmae parts export``), raw-``attention`` or ground-truth ``masks``
        parts. Pretraining reads the train split's; the kept-quarter evaluation of the patch-P/2 rows reads both
        splits' foreground."""
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
        """Fast linear probe (which saves its features), then the weighted kNN and the logistic-regression probe on
        those same features. ``source``: the probe's encoder fields (checkpoint, random init, tokens)."""
        from semmae.eval.linprobe import sweep_edge
        from semmae_lab.probes import knn_probe, logistic_probe, probe_features

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
            # evaluated again only when its record is missing: a probe folder left there (another view, or an
            # interrupted probe) is this harness's own and is redone
            overwrite=probe_dir.exists(),
            **({"blrs": [float(b) for b in self.p.linprobe_blrs]} if self.p.linprobe_blrs else {}),
            **self.common(),
        )
        run_stage("linprobe", cfg)
        probe = json.loads((probe_dir / "results.json").read_text())
        probe = probe.get("metrics", probe)
        feats = probe_features(probe_dir)
        knn = knn_probe(feats)
        logreg_top1, logreg_converged = logistic_probe(feats)
        blrs = [float(b) for b in cfg.blrs]
        best = probe.get("best_blr")
        return {
            "knn_top1": knn["top1"],
            "knn_top5": knn["top5"],
            "linprobe_top1": float(probe["top1"]),
            "linprobe_top5": None
            if probe.get("top5") is None
            else float(probe["top5"]),  # None: <= 5 classes
            "linprobe_best_blr": best,
            "linprobe_blrs": blrs,
            "linprobe_best_on_edge": None if best is None else sweep_edge(blrs, best),
            "logreg_top1": logreg_top1,
            "logreg_converged": logreg_converged,
            "features": str(probe_dir / "features.pt"),
            "num_train": int(feats["train_x"].shape[0]),
            "num_val": int(feats["val_x"].shape[0]),
        }

    def run_one(self, cfg: GridConfig, seed: int) -> None:
        from semmae.utils.run_logger import read_log

        record_path = self.runs_dir / f"{cfg.key}-seed{seed}.json"
        if record_path.exists():
            return
        run_dir = self.work / "runs" / f"{cfg.key}-seed{seed}"
        cache = self.caches[(cfg.parts, self.grid_size(cfg.fine))] if cfg.parts else None
        t0 = time.perf_counter()
        run_stage("pretrain", self.pretrain_config(run_dir, cfg, seed, self.p.epochs, cache))
        t1 = time.perf_counter()
        ckpt = latest_checkpoint(run_dir)
        # every patch (the default for patch-P rows; written explicitly so patch-P/2 checkpoints are not kept by auto)
        metrics = self.evaluate(run_dir / "eval", seed, {"checkpoint": str(ckpt), "tokens": "all"})
        if (
            cfg.fine
        ):  # the paper's protocol for its 8x8 rows: the kept quarter, foreground from the part caches
            metrics["kept"] = self.evaluate_kept(run_dir, cfg, seed, ckpt)
        t2 = time.perf_counter()
        log = run_dir / "log.jsonl"
        logs = read_log(log) if log.exists() else []
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
        grid = self.grid_size(fine=True)
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
        ref_ckpt = latest_checkpoint(ref) if ref.exists() else Path(self.encoder_ckpt or "")
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
            "commit": git_commit(self.repo),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def finish(self, path: Path, record: dict[str, Any]) -> None:
        atomic_write_json(path, record)
        self.log(
            f"{record['key']} seed {record['seed']}: kNN {record['knn_top1']:.1f} %, linear probe "
            f"{record['linprobe_top1']:.1f} %, logistic regression {record['logreg_top1']:.1f} % (pretrain "
            f"{record['pretrain_seconds']:.0f} s, eval {record['eval_seconds']:.0f} s)"
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
            stages=self.runner.seconds,
            data=self.data_root,
            patch=self.patch,
            width=self.width,
            planned_rows=[r for c in self.configs for r in c.rows]
            + [(t, label + repro_report.KEPT_SUFFIX) for c in self.configs if c.fine for t, label in c.rows],
        )

    # -- driver ------------------------------------------------------------------------------------------------
    def backfill_logreg(self) -> None:
        """Add ``logreg_top1`` to records written before that metric existed (from their cached features)."""
        from semmae_lab.probes import logistic_probe, probe_features

        for path in sorted(self.runs_dir.glob("*.json")):
            rec = json.loads(path.read_text())
            if "logreg_top1" in rec:
                continue
            sub = "linprobe" if rec["key"] == RANDOM_INIT else "eval/linprobe"
            probe_dir = self.work / "runs" / f"{rec['key']}-seed{rec['seed']}" / sub
            if (probe_dir / "features.pt").is_file():
                rec["logreg_top1"] = logistic_probe(probe_features(probe_dir))[0]
                rec["features"] = str(probe_dir / "features.pt")
                atomic_write_json(path, rec)

    def prepare_parts(self) -> None:
        """The part encoder, part learning and every part cache the grid's configurations read (each once)."""
        if not any(c.parts for c in self.configs):
            return
        self.encoder_ckpt = self.runner.run(self.part_encoder_stage())
        self.parts_ckpt = self.runner.run(Stage("parts", self.stage_parts))
        for kind, grid in sorted({(c.parts, self.grid_size(c.fine)) for c in self.configs if c.parts}):
            stage = Stage(f"cache_{kind}_grid{grid}", functools.partial(self.stage_cache, kind, grid))
            self.caches[(kind, grid)] = self.runner.run(stage)
        grid = self.grid_size(fine=True)
        for kind in sorted({c.parts for c in self.configs if c.fine}):  # kept-quarter eval: val foreground
            stage = Stage(
                f"cache_{kind}_grid{grid}_val", functools.partial(self.stage_cache, kind, grid, "val")
            )
            self.caches[(kind, grid, "val")] = self.runner.run(stage)
        self.backfill_kept()

    def run(self, summarise_only: bool = False) -> Path:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.backfill_logreg()
        if summarise_only:
            self.runner.seconds = self.runner.marks.seconds()
            self.summarise()
            return self.out / f"{self.stem}.md"
        t_all = time.perf_counter()
        self.data = self.runner.run(Stage("data", self.stage_data))
        self.prepare_parts()
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
