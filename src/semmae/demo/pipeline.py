"""``semmae demo``: the paper end to end on the built-in synthetic dataset (issue: demo).

Stages, each a call of the same CLI verb a user would run, in order:

1. ``data``       - the synthetic part dataset with ground-truth part masks (:mod:`semmae.data.synth`);
2. ``bootstrap``  - a part encoder bootstrapped offline by a short random-masking MAE (or the user's iBOT/DINO
                    weights via ``--encoder-checkpoint``): stands in for the paper's iBOT ViT-S/16;
3. ``parts``      - part learning (Sec. 3.1), the part-map caches, part scores against the ground truth next to
                    the baselines (raw attention, k-means, spatial split, grid ceiling), the part figure;
4. ``masks``      - the mask schedule panel (paper Fig. 1 / Fig. 3);
5. ``pretrain``   - SemMAE (adaptive masking, gamma 2) and MAE (random masking), same budget, same seeds;
6. ``evaluate``   - kNN and the fast linear probe for both, and for the untrained encoder;
7. ``report``     - ``report.html`` (self-contained) and ``report.md``.

A stage that finished records its artifacts in ``<out>/stages/<stage>.json``; a rerun with the same ``--out``
checks those artifacts (they must exist and images must decode) and skips the stage, and an interrupted stage
resumes from its own checkpoints (pretraining ``--resume auto``, part training ``--resume``, cache export).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semmae.data.synth import STYLES
from semmae.demo.budgets import BUDGETS, Budget
from semmae.errors import UserError
from semmae.utils.io import atomic_write_json

#: the part-learning recipe of the demo (cached tokens, light decoder, cosine Eq. 2, softmax over parts);
#: the budget sets the image size, part count, blur and epochs
PARTS_PRESET = "parts/tiny_cpu"


@dataclass
class DemoConfig:
    """``semmae demo`` settings."""

    out: str = field(
        default="semmae_demo", metadata={"help": "output folder (rerun with the same folder to resume)"}
    )
    budget: str = field(
        default="small",
        metadata={
            "help": "small: ~3.5 min on 2 idle CPU cores; micro: smoke run; medium: more data, epochs and seeds",
            "choices": tuple(BUDGETS),
        },
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    seed: int = field(default=0, metadata={"help": "first seed; SemMAE and MAE use seeds seed .. seed+n-1"})
    encoder: str = field(
        default="",
        metadata={"help": "timm architecture of --encoder-checkpoint (if the checkpoint does not tell it)"},
    )
    encoder_checkpoint: str = field(
        default="",
        metadata={"help": "iBOT / DINO / MAE weights for part learning; default: bootstrap one offline"},
    )
    style: str = field(
        default="class",
        metadata={
            "help": "synthetic set style (`semmae data synth --style`): class = colours name parts and classes; "
            "random = only shape and layout do",
            "choices": STYLES,
        },
    )
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per stage"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "delete the demo run already in --out and start again (a rerun otherwise resumes it)"
        },
    )
    progress: bool = field(default=True, metadata={"help": "progress bars inside stages"})

    def validate(self) -> None:
        if self.encoder_checkpoint and not Path(self.encoder_checkpoint).is_file():
            raise UserError(f"--encoder-checkpoint {self.encoder_checkpoint} does not exist")
        if self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0, got {self.num_workers}")


def run_verb(argv: list[str]) -> Any:
    """Run ``semmae <argv>`` in this process and return the verb's result (exceptions propagate)."""
    from semmae.cli import build_parser

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a flag the demo built is wrong: a bug, not a user error
        raise RuntimeError(f"internal: the demo built invalid arguments: semmae {' '.join(argv)}") from e
    return args.func(args)


def verify_artifact(path: Path) -> str | None:
    """None if ``path`` is a usable artifact, else why not (missing, empty, an image that does not decode)."""
    if not path.exists():
        return "is missing"
    if path.is_dir():
        return None if any(path.iterdir()) else "is an empty folder"
    if path.stat().st_size == 0:
        return "is an empty file"
    if path.suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as e:  # noqa: BLE001
            return f"does not decode ({e})"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as e:
            return f"is not valid JSON ({e})"
    return None


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[], list[Path]]  # does the work, returns its artifacts
    always: bool = False  # cheap stages that summarise others (the report) run every time


class Demo:
    """The demo run: paths, stages and their bookkeeping."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.budget: Budget = BUDGETS[cfg.budget]
        self.out = Path(cfg.out).resolve()
        self.data = self.out / "data"
        self.seeds = [cfg.seed + i for i in range(self.budget.seeds)]
        self.timings: dict[str, float] = {}

    # -- helpers ------------------------------------------------------------------------------------------
    def common(self) -> list[str]:
        return ["--device", self.cfg.device, "--num-workers", str(self.cfg.num_workers)]

    def pretrain_args(self, out: Path, masking: str, seed: int, epochs: int, parts: Path | None) -> list[str]:
        b = self.budget
        argv = [
            "pretrain",
            "--data",
            str(self.data / "train"),
            "--out",
            str(out),
            "--model",
            b.model,
            "--img-size",
            str(b.img_size),
            "--depth",
            str(b.depth),
            "--decoder-depth",
            str(b.decoder_depth),
            "--masking",
            masking,
            "--epochs",
            str(epochs),
            "--warmup-epochs",
            str(b.warmup_epochs),
            "--batch-size",
            str(b.batch_size),
            "--blr",
            str(b.blr),
            "--seed",
            str(seed),
            "--resume",
            "auto",
            "--vis-every",
            str(max(epochs, 1)),
            "--log-every",
            "1",
            "--precision",
            self.precision(),
            "--progress" if self.cfg.progress else "--no-progress",
            *self.common(),
        ]
        if parts is not None:
            argv += ["--parts", str(parts), "--gamma", "2"]
        return argv

    def precision(self) -> str:
        """bf16 autocast on a GPU; fp32 on the CPU, where bf16 matmuls are slow on most processors."""
        import torch

        return "auto" if self.cfg.device != "cpu" and torch.cuda.is_available() else "fp32"

    @staticmethod
    def latest_checkpoint(run_dir: Path) -> Path:
        from semmae.engine.checkpoint import CheckpointManager

        ckpt = CheckpointManager(run_dir).latest()
        if ckpt is None:
            raise UserError(f"no checkpoint in {run_dir}")
        return ckpt

    def encoder_checkpoint(self) -> Path:
        if self.cfg.encoder_checkpoint:
            return Path(self.cfg.encoder_checkpoint)
        return self.latest_checkpoint(self.out / "bootstrap")

    def runs(self) -> list[tuple[str, int, Path]]:
        """(method, seed, run dir) of every pretraining run."""
        return [(m, s, self.out / "pretrain" / f"{m}-seed{s}") for m in ("semmae", "mae") for s in self.seeds]

    # -- stages -------------------------------------------------------------------------------------------
    def stage_data(self) -> list[Path]:
        from semmae.data.synth import make_synthetic_dataset

        if not (self.data / "synth.json").exists():
            make_synthetic_dataset(
                self.data,
                self.budget.num_images,
                self.budget.img_size,
                self.cfg.seed,
                progress=self.cfg.progress,
                style=self.cfg.style,
            )
        return [self.data / "synth.json", self.data / "train", self.data / "val", self.data / "masks"]

    def stage_bootstrap(self) -> list[Path]:
        if self.cfg.encoder_checkpoint:
            return [Path(self.cfg.encoder_checkpoint)]
        out = self.out / "bootstrap"
        run_verb(self.pretrain_args(out, "random", self.cfg.seed, self.budget.bootstrap_epochs, None))
        return [self.latest_checkpoint(out)]

    def stage_parts(self) -> list[Path]:
        b = self.budget
        parts = self.out / "parts"
        enc = ["--encoder-checkpoint", str(self.encoder_checkpoint())]
        if self.cfg.encoder:
            enc += ["--encoder", self.cfg.encoder]
        run_verb(
            [
                "parts",
                "train",
                "--config",
                PARTS_PRESET,
                "--data",
                str(self.data / "train"),
                "--out",
                str(parts / "run"),
                *enc,
                "--img-size",
                str(b.img_size),
                "--num-parts",
                str(b.num_parts),
                "--blur-kernel",
                str(b.blur_kernel),
                "--epochs",
                str(b.parts_epochs),
                "--batch-size",
                str(b.batch_size),
                "--seed",
                str(self.cfg.seed),
                "--resume",
                "auto",
                *self.common(),
            ]
        )
        ckpt = self.parts_checkpoint()
        grid = b.img_size // self.patch_size()
        for split in ("train", "val"):
            cache = parts / f"cache_{split}"
            if not cache.exists():
                run_verb(
                    [
                        "parts",
                        "export",
                        "--data",
                        str(self.data / split),
                        "--checkpoint",
                        str(ckpt),
                        "--grid",
                        str(grid),
                        "--out",
                        str(cache),
                        "--batch-size",
                        str(b.batch_size),
                        *self.common(),
                    ]
                )
        metrics = parts / "part_metrics.json"
        run_verb(
            [
                "parts",
                "eval",
                "--data",
                str(self.data / "val"),
                "--cache",
                str(parts / "cache_val"),
                "--masks",
                str(self.data / "masks" / "val"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(metrics),
                "--batch-size",
                str(b.batch_size),
                *self.common(),
            ]
        )
        figure = self.out / "figures" / "parts.png"
        run_verb(
            [
                "parts",
                "show",
                "--data",
                str(self.data / "val"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(figure),
                "--num-images",
                "6",
                "--masks",
                str(self.data / "masks" / "val"),
                "--device",
                self.cfg.device,
            ]
        )
        return [ckpt, parts / "cache_train", parts / "cache_val", metrics, figure]

    def parts_checkpoint(self) -> Path:
        from semmae.parts.train import CHECKPOINT_NAME

        ckpt = self.out / "parts" / "run" / CHECKPOINT_NAME
        if not ckpt.is_file():
            raise UserError(f"part learning wrote no checkpoint at {ckpt}")
        return ckpt

    def patch_size(self) -> int:
        from semmae.models import create_model

        return create_model(self.budget.model, img_size=self.budget.img_size, depth=1).patch_size

    def stage_masks(self) -> list[Path]:
        figure = self.out / "figures" / "masks.png"
        run_verb(
            [
                "masks",
                "show",
                "--data",
                str(self.data / "val"),
                "--cache",
                str(self.out / "parts" / "cache_val"),
                "--out",
                str(figure),
                "--num-images",
                "3",
                "--alphas",
                "0",
                "0.5",
                "1",
                "--img-size",
                str(self.budget.img_size),
                "--patch-size",
                str(self.patch_size()),
                "--seed",
                str(self.cfg.seed),
            ]
        )
        return [figure]

    def stage_pretrain(self) -> list[Path]:
        artifacts = []
        for method, seed, run in self.runs():
            cache = self.out / "parts" / "cache_train" if method == "semmae" else None
            run_verb(
                self.pretrain_args(
                    run,
                    "adaptive" if method == "semmae" else "random",
                    seed,
                    self.budget.pretrain_epochs,
                    cache,
                )
            )
            artifacts += [self.latest_checkpoint(run), run / "log.jsonl"]
        return artifacts

    def stage_evaluate(self) -> list[Path]:
        b = self.budget
        evals = self.out / "eval"
        results: dict[str, list[dict]] = {}
        targets = [(m, s, ["--checkpoint", str(self.latest_checkpoint(r))]) for m, s, r in self.runs()]
        targets.append(
            (
                "random init",
                self.cfg.seed,
                ["--random-init", "--checkpoint", str(self.latest_checkpoint(self.runs()[0][2]))],
            )
        )
        for method, seed, source in targets:
            name = f"{method.replace(' ', '_')}-seed{seed}"
            common = [
                "--data",
                str(self.data),
                *source,
                "--img-size",
                str(b.img_size),
                "--batch-size",
                str(b.batch_size),
                "--seed",
                str(seed),
                *self.common(),
            ]
            knn = run_verb(["knn", *common, "--out", str(evals / name / "knn")])
            probe = run_verb(
                [
                    "linprobe",
                    *common,
                    "--mode",
                    "fast",
                    "--epochs",
                    str(b.linprobe_epochs),
                    "--warmup-epochs",
                    str(b.linprobe_epochs // 10),
                    "--out",
                    str(evals / name / "linprobe"),
                ]
            )
            results.setdefault(method, []).append(
                {
                    "seed": seed,
                    "knn_top1": _top1(knn, evals / name / "knn"),
                    "linprobe_top1": _top1(probe, evals / name / "linprobe"),
                }
            )
        path = evals / "accuracy.json"
        atomic_write_json(path, results)
        return [path]

    def stage_report(self) -> list[Path]:
        from semmae.demo.make_report import build_report

        page, md = build_report(self)
        return [page, md]

    def stages(self) -> list[Stage]:
        return [
            Stage("data", "generate the synthetic part dataset", self.stage_data),
            Stage("bootstrap", "bootstrap the part encoder (random-masking MAE)", self.stage_bootstrap),
            Stage("parts", "learn parts, export caches, score parts", self.stage_parts),
            Stage("masks", "draw the mask schedule", self.stage_masks),
            Stage("pretrain", "pretrain SemMAE and MAE", self.stage_pretrain),
            Stage("evaluate", "kNN and linear probe", self.stage_evaluate),
            Stage("report", "write the report", self.stage_report, always=True),
        ]

    # -- driver -------------------------------------------------------------------------------------------
    def marker(self, stage: Stage) -> Path:
        return self.out / "stages" / f"{stage.name}.json"

    def finished(self, stage: Stage) -> bool:
        marker = self.marker(stage)
        if not marker.exists():
            return False
        try:
            record = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return False
        problems = {p: verify_artifact(Path(p)) for p in record.get("artifacts", [])}
        bad = {p: why for p, why in problems.items() if why}
        if bad:
            p, why = next(iter(bad.items()))
            print(f"[demo] stage {stage.name}: artifact {p} {why}; running the stage again", flush=True)
            return False
        self.timings[stage.name] = float(record.get("seconds", 0.0))
        return True

    def setup_record(self) -> dict[str, Any]:
        """What the artifacts depend on: a rerun into the same folder must agree on it."""
        return {
            "budget": self.cfg.budget,
            **dataclasses.asdict(self.budget),
            "seed": self.cfg.seed,
            "encoder": self.cfg.encoder,
            "encoder_checkpoint": self.cfg.encoder_checkpoint,
            "style": self.cfg.style,
        }

    def check_same_setup(self, previous: list[str]) -> None:
        """Refuse a folder that holds something other than a demo run, or a demo run with other settings."""
        path = self.out / "stages" / "setup.json"
        if previous and not path.exists() and not (self.out / "demo_config.yaml").exists():
            raise UserError(
                f"{self.out} is not empty and holds no demo run ({', '.join(previous[:4])}); use another --out"
            )
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"{path} is corrupt ({e}); use another --out or --overwrite") from None
            old.setdefault("style", "class")  # folders made before --style existed
            record = self.setup_record()
            changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            if changed:
                raise UserError(
                    f"{self.out} holds a demo run with other settings ({', '.join(changed)} differ); "
                    "use another --out, --overwrite, or the same settings to resume it"
                )

    def run(self) -> Path:
        from semmae.utils.rundir import claim_run_dir

        # a rerun resumes (the stages check their own artifacts); --overwrite starts again
        with claim_run_dir(
            self.out, "demo", resume=not self.cfg.overwrite, overwrite=self.cfg.overwrite
        ) as run:
            if not self.cfg.overwrite:
                self.check_same_setup(run.previous)
            run.start(tensorboard=False)
            return self._run()

    def _run(self) -> Path:
        from semmae.config import save_config

        setup = self.out / "stages" / "setup.json"
        if not setup.exists():
            atomic_write_json(setup, self.setup_record())
        save_config(self.cfg, self.out / "demo_config.yaml")
        stages = self.stages()
        t_all = time.perf_counter()
        for i, stage in enumerate(stages, 1):
            head = f"[demo {i}/{len(stages)}] {stage.name}: {stage.title}"
            if not stage.always and self.finished(stage):
                print(f"{head} - done already, skipped", flush=True)
                continue
            print(f"{head} ...", flush=True)
            t0 = time.perf_counter()
            try:
                artifacts = stage.run()
            except UserError as e:
                raise UserError(f"stage '{stage.name}' failed: {e}") from None
            except Exception as e:
                raise RuntimeError(f"stage '{stage.name}' failed: {type(e).__name__}: {e}") from e
            seconds = time.perf_counter() - t0
            self.timings[stage.name] = seconds
            atomic_write_json(
                self.marker(stage),
                {"stage": stage.name, "seconds": seconds, "artifacts": [str(p) for p in artifacts]},
            )
            print(f"{head} - done in {seconds:.0f} s", flush=True)
        total = time.perf_counter() - t_all
        print(f"[demo] finished in {total:.0f} s: {self.out / 'report.html'}", flush=True)
        return self.out / "report.html"


def _top1(result: Any, run_dir: Path) -> float:
    if isinstance(result, dict) and "top1" in result:
        return float(result["top1"])
    data = json.loads((run_dir / "results.json").read_text())
    value = data.get("top1", data.get("metrics", {}).get("top1"))
    if value is None or not math.isfinite(float(value)):
        raise UserError(f"{run_dir / 'results.json'} has no top1")
    return float(value)
