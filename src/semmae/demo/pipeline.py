"""``semmae demo``: the paper end to end on the built-in synthetic dataset (issue: demo).

Stages, in order, each running the same CLI verbs a user would run - in this process, from typed configs
(:func:`semmae.cli.stage_config` and ``dataclasses.replace``, run by :func:`semmae.cli.run_stage`):

1. ``data``       - the synthetic part dataset with ground-truth part masks (:mod:`semmae.data.synth`);
2. ``part_encoder`` - a part encoder: a short random-masking MAE trained offline (or the user's iBOT/DINO
                    weights via ``--encoder-checkpoint``): stands in for the paper's iBOT ViT-S/16 (its folder is
                    ``<out>/bootstrap``; a done-file ``stages/bootstrap.json`` from before the rename still counts);
3. ``parts``      - part learning (Sec. 3.1), the part-map caches, part scores against the ground truth next to
                    the baselines (raw attention, k-means, spatial split, grid ceiling), the part figure;
4. ``masks``      - the mask schedule panel (paper Fig. 1 / Fig. 3);
5. ``pretrain``   - SemMAE (adaptive masking, gamma 2) on the learned parts and on the ground-truth parts (the
                    oracle), and MAE (random masking), same budget, same seeds;
6. ``evaluate``   - kNN and the fast linear probe for each, and for the untrained encoder; paired differences;
7. ``report``     - ``report.html`` (self-contained) and ``report.md``.

The stages run on the library's one stage runner (:class:`semmae.engine.stage_runner.StageRunner`, as the lab's
harness and campaigns do): a stage that finished records its artifacts in ``<out>/stages/<stage>.json``; a rerun
with the same ``--out`` checks those artifacts (they must exist and images must decode) and skips the stage, and an
interrupted stage resumes from its own checkpoints (pretraining and part training ``--resume auto``, cache
export).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from semmae.cli import run_stage, stage_config
from semmae.demo.layout import DemoLayout
from semmae.demo.recipe import (
    MAE_MASKING,
    MASK_FIGURE_ALPHAS,
    MASK_FIGURE_IMAGES,
    METHODS,
    PART_FIGURE_IMAGES,
    PROBE_PRESET,
    part_learning_config,
)
from semmae.engine.run_checkpoints import latest_checkpoint
from semmae.engine.stage_run import command_inputs
from semmae.engine.stage_runner import Stage, StageRunner
from semmae.errors import UserError
from semmae.parts.checkpoint import part_checkpoint
from semmae.utils.io import atomic_write_json

#: the part encoder's run folder under ``--out``: its name from before the stage was renamed (``bootstrap`` was the
#: stage, not the ``semmae bootstrap`` verb), kept so that existing demo folders resume
PART_ENCODER_DIR = "bootstrap"


class Demo(DemoLayout):
    """The demo run: its stages and their bookkeeping (its paths: :class:`~semmae.demo.layout.DemoLayout`)."""

    # -- helpers ------------------------------------------------------------------------------------------
    def common(self) -> dict[str, Any]:
        return {"device": self.cfg.device, "num_workers": self.cfg.num_workers}

    def training(self) -> dict[str, Any]:
        """Fields every training stage of the demo shares; an interrupted one continues (``resume auto``)."""
        return {
            "batch_size": self.budget.batch_size,
            "seed": self.cfg.seed,
            "resume": "auto",
            **self.common(),
        }

    def pretrain_config(self) -> Any:
        """The part encoder's pretraining (random masking); the compared runs are ``dataclasses.replace``s of it."""
        b = self.budget
        return stage_config(
            "pretrain",
            data=str(self.data / "train"),
            out=str(self.out / PART_ENCODER_DIR),
            model=b.model,
            img_size=b.img_size,
            depth=b.depth,
            decoder_depth=b.decoder_depth,
            masking=MAE_MASKING,
            epochs=b.bootstrap_epochs,
            warmup_epochs=b.warmup_epochs,
            blr=b.blr,
            vis_every=max(b.bootstrap_epochs, 1),
            log_every=1,
            progress=self.cfg.progress,
            **self.training(),
        )

    latest_checkpoint = staticmethod(latest_checkpoint)

    def encoder_checkpoint(self) -> Path:
        if self.cfg.encoder_checkpoint:
            return Path(self.cfg.encoder_checkpoint)
        return self.latest_checkpoint(self.out / PART_ENCODER_DIR)

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

    def stage_part_encoder(self) -> list[Path]:
        if self.cfg.encoder_checkpoint:
            return [Path(self.cfg.encoder_checkpoint)]
        cfg = self.pretrain_config()
        run_stage("pretrain", cfg)
        return [self.latest_checkpoint(Path(cfg.out))]

    def stage_parts(self) -> list[Path]:
        b = self.budget
        parts, val = self.out / "parts", str(self.data / "val")
        train = part_learning_config(
            b,
            data=str(self.data / "train"),
            out=str(parts / "run"),
            encoder_checkpoint=str(self.encoder_checkpoint()),
            encoder=self.cfg.encoder,
            seed=self.cfg.seed,
            **self.common(),
        )
        run_stage("parts train", train)
        ckpt = str(self.parts_checkpoint())
        export = stage_config(
            "parts export",
            data=str(self.data / "train"),
            checkpoint=ckpt,
            grid=b.img_size // self.patch_size(),
            out=str(parts / "cache_train"),
            batch_size=b.batch_size,
            **self.common(),
        )
        for split in ("train", "val"):
            cache = parts / f"cache_{split}"
            if not cache.exists():
                run_stage(
                    "parts export", dataclasses.replace(export, data=str(self.data / split), out=str(cache))
                )
        metrics = parts / "part_metrics.json"
        run_stage(
            "parts eval",
            stage_config(
                "parts eval",
                data=val,
                cache=str(parts / "cache_val"),
                masks=str(self.data / "masks" / "val"),
                checkpoint=ckpt,
                out=str(metrics),
                overwrite=True,  # the demo's own file (a stage that ran again)
                batch_size=b.batch_size,
                **self.common(),
            ),
        )
        figure = self.out / "figures" / "parts.png"
        show = stage_config(
            "parts show",
            data=val,
            checkpoint=ckpt,
            out=str(figure),
            overwrite=True,
            num_images=PART_FIGURE_IMAGES,
            masks=str(self.data / "masks" / "val"),
            device=self.cfg.device,
        )
        run_stage("parts show", show)
        return [Path(ckpt), parts / "cache_train", parts / "cache_val", metrics, figure]

    def parts_checkpoint(self) -> Path:
        return part_checkpoint(self.out / "parts" / "run")

    def patch_size(self) -> int:
        """The budget's model's patch, from the model registry's table (no model is built)."""
        from semmae.models import model_config

        return model_config(self.budget.model, img_size=self.budget.img_size).patch_size

    def stage_masks(self) -> list[Path]:
        figure = self.out / "figures" / "masks.png"
        cfg = stage_config(
            "masks show",
            data=str(self.data / "val"),
            cache=str(self.out / "parts" / "cache_val"),
            out=str(figure),
            overwrite=True,  # the demo's own figure (a stage that ran again)
            num_images=MASK_FIGURE_IMAGES,
            alphas=MASK_FIGURE_ALPHAS,
            img_size=self.budget.img_size,
            patch_size=self.patch_size(),
            seed=self.cfg.seed,
        )
        run_stage("masks show", cfg)
        return [figure]

    def oracle_cache(self) -> Path:
        """The ground-truth part cache of the training images (``parts export --source masks``), on the MAE's grid."""
        cache = self.out / "parts" / "cache_gt_train"
        if not cache.exists():
            cfg = stage_config(
                "parts export",
                source="masks",
                data=str(self.data / "train"),
                masks=str(self.data / "masks" / "train"),
                grid=self.budget.img_size // self.patch_size(),
                out=str(cache),
            )
            run_stage("parts export", cfg)
        return cache

    def stage_pretrain(self) -> list[Path]:
        artifacts = []
        epochs = self.budget.pretrain_epochs
        base = dataclasses.replace(self.pretrain_config(), epochs=epochs, vis_every=max(epochs, 1))
        self.oracle_cache()
        for method, seed, run in self.runs():
            masking, cache = METHODS[method]
            cfg = dataclasses.replace(
                base,
                out=str(run),
                seed=seed,
                masking=masking,
                parts=str(self.out / "parts" / cache) if cache else None,
            )
            run_stage("pretrain", cfg)
            artifacts += [self.latest_checkpoint(run), run / "log.jsonl"]
        return artifacts

    def stage_evaluate(self) -> list[Path]:
        b = self.budget
        evals = self.out / "eval"
        results: dict[str, list[dict]] = {}
        targets = [(m, s, self.latest_checkpoint(r), False) for m, s, r in self.runs()]
        # the untrained encoder: the architecture of the first run's checkpoint, at its initialisation
        targets.append(("random init", self.cfg.seed, self.latest_checkpoint(self.runs()[0][2]), True))
        runs = {(m, s): r for m, s, r in self.runs()}
        for method, seed, checkpoint, random_init in targets:
            # a pretrained encoder's evaluations live in its run folder, where `semmae export`'s model card finds
            # them; the untrained encoder's beside the runs
            run = runs.get((method, seed))
            name = run / "evals" if run is not None else evals / f"{method.replace(' ', '_')}-seed{seed}"
            common = dict(
                data=str(self.data),
                checkpoint=str(checkpoint),
                random_init=random_init,
                img_size=b.img_size,
                batch_size=b.batch_size,
                seed=seed,
                **self.common(),
            )
            run_stage("knn", stage_config("knn", **common, out=str(name / "knn")))
            probe = stage_config(
                "linprobe",
                PROBE_PRESET,  # its sweep holds the optimum of small batches (issue 29); the budget sets the rest
                **common,
                mode="fast",
                epochs=b.linprobe_epochs,
                warmup_epochs=b.linprobe_epochs // 10,
                out=str(name / "linprobe"),
            )
            run_stage("linprobe", probe)
            results.setdefault(method, []).append(
                {"seed": seed, "knn_top1": _top1(name / "knn"), "linprobe_top1": _top1(name / "linprobe")}
            )
        path = evals / "accuracy.json"
        atomic_write_json(path, results)
        return [path]

    def stage_report(self) -> list[Path]:
        from semmae.demo.make_report import build_report

        page, md = build_report(self)
        return [page, md]

    def stages(self) -> list[Stage]:
        """The demo's chain, in order; each stage returns the files it made (checked before a finished one is
        skipped)."""
        return [
            Stage("data", self.stage_data, "generate the synthetic part dataset", artifacts=True),
            Stage(
                "part_encoder",
                self.stage_part_encoder,
                "train the part encoder (random-masking MAE)",
                was=("bootstrap",),
                artifacts=True,
            ),
            Stage("parts", self.stage_parts, "learn parts, export caches, score parts", artifacts=True),
            Stage("masks", self.stage_masks, "draw the mask schedule", artifacts=True),
            Stage("pretrain", self.stage_pretrain, "pretrain SemMAE and MAE", artifacts=True),
            Stage("evaluate", self.stage_evaluate, "kNN and linear probe", artifacts=True),
            Stage("report", self.stage_report, "write the report", always=True, artifacts=True),
        ]

    # -- driver -------------------------------------------------------------------------------------------
    def runner(self, log=None, label: str = "demo") -> StageRunner:
        """The stages' runner in ``--out`` (done-files ``<out>/stages/<stage>.json``: seconds and artifacts); its
        ``seconds`` are the report's stage times."""
        runner = StageRunner(self.out, log, label)
        self.timings = runner.seconds
        return runner

    def learn_parts(self, log=print) -> dict[str, Any]:
        """Only the first three stages (data, part_encoder, parts) into a folder of the caller's own, skipped once its
        part scores exist; returns ``parts eval``'s metrics (learned parts beside the baselines)."""
        metrics = self.out / "parts" / "part_metrics.json"
        if not metrics.exists():
            self.out.mkdir(parents=True, exist_ok=True)
            self.check_same_setup([])  # the folder is the caller's: only the settings are checked
            self.runner(log, label=f"seed {self.cfg.seed}").run_all(self.stages()[:3])
        return json.loads(metrics.read_text())

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
            self.out,
            "demo",
            resume=not self.cfg.overwrite,
            overwrite=self.cfg.overwrite,
            inputs=command_inputs(self.cfg),  # --overwrite never deletes its --encoder-checkpoint
        ) as run:
            if not self.cfg.overwrite:
                self.check_same_setup(run.previous)
            run.start(tensorboard=False)
            return self._run()

    def _run(self) -> Path:
        from semmae.utils.plain_config import save_config

        setup = self.out / "stages" / "setup.json"
        if not setup.exists():
            atomic_write_json(setup, self.setup_record())
        save_config(self.cfg, self.out / "demo_config.yaml")
        t_all = time.perf_counter()
        self.runner().run_all(self.stages())
        total = time.perf_counter() - t_all
        print(f"[demo] finished in {total:.0f} s: {self.out / 'report.html'}", flush=True)
        return self.out / "report.html"


def _top1(run_dir: Path) -> float:
    """Top-1 of a finished kNN or linear-probe run (its ``results.json``)."""
    data = json.loads((run_dir / "results.json").read_text())
    value = data.get("top1", data.get("metrics", {}).get("top1"))
    if value is None or not math.isfinite(float(value)):
        raise UserError(f"{run_dir / 'results.json'} has no top1")
    return float(value)
