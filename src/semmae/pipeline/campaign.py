"""Pre-registered, paired campaigns on the reproduction harness: does semantic-guided masking help? (issue 24)

A campaign is a plan file (``benchmarks/campaigns/<name>.yaml``), committed before its first result, that fixes the
design: the budget (a :class:`~semmae.pipeline.preset.Preset`), the data, the arms (masking x part source), the
baseline arm, the seeds, the primary metric, the gate and the decision rule. :class:`Campaign` then

* checks the pin: the plan file is committed and unchanged, the code tree is clean, and every run of the campaign
  comes from one commit (run it from a fixed worktree, ``git worktree add``, while main moves on);
* runs seed by seed, all arms of a seed before the next seed ("pairs"), rotating which arm goes first;
* applies the gate once, at the first seed, before any other arm is run: the baseline must beat the untrained
  encoder by ``gate.min_gain`` on one of ``gate.metrics``, and its probes must have converged (the fast probe's
  chosen learning rate inside its sweep, the logistic regression stopped before its iteration cap); a failed gate
  stops the campaign with the reason (amend the plan, commit it, use a new work folder);
* resumes after any stop: a run whose record exists, comes from the campaign's commit and whose checkpoint still
  has the recorded SHA-256 is skipped without re-evaluation; an unfinished run resumes from its own checkpoint;
* prints a status line (pairs done / left, time per pair, ETA) and rewrites the report
  (:mod:`semmae.pipeline.campaign_report`) after every run.

What outlives a machine (committed with the results) lies under ``<out>/campaign-<name>/``: ``campaign.json`` (the
pin, the plan's hash, the part caches' hashes), ``gate.json``, ``per-run/<arm>-seed<s>.json``, ``caches/`` and
``stages/`` (part-quality records); the work folder holds only what can be rebuilt.

Decision rule (per comparison, on the primary metric, only when every planned pair is finished - there are no
interim looks): the 95 % CI of the mean paired difference above 0 -> the direction reproduces; its 90 % CI inside
``+-margin`` (two one-sided t tests at 5 %) -> a well-powered null; the 95 % CI below 0 -> the arm hurts here;
otherwise inconclusive (:func:`semmae.eval.paired.decide`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from semmae.cli import run_stage, stage_config
from semmae.errors import UserError
from semmae.pipeline.campaign_report import write_report
from semmae.pipeline.harness import Harness, resolve_device
from semmae.pipeline.marks import StageMarks
from semmae.pipeline.plan import UNTRAINED, Arm, Plan, metric
from semmae.utils.io import atomic_write_json, sha256_file


# ------------------------------------------------------------------------------------------------------- the pin
def git(*args: str, cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def input_path(path: str | Path, repo: Path) -> Path:
    """A plan's input path: absolute as written, else relative to the checkout ``repo``."""
    path = Path(path)
    return path if path.is_absolute() else (repo / path).resolve()


def code_pin(plan_path: str, repo: Path) -> dict[str, Any]:
    """The commit ``repo`` runs from, and why it cannot pin a campaign (uncommitted plan or code), if it cannot."""
    commit = git("rev-parse", "HEAD", cwd=repo)
    if not commit:
        return {"commit": "", "problem": "not a git checkout: a campaign must run from a committed tree"}
    dirty = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no", cwd=repo).splitlines()
        if line[3:].startswith(("src/", "benchmarks/", "configs/", "pyproject.toml"))
    ]
    plan_rel = os.path.relpath(plan_path, repo)
    tracked = bool(git("ls-files", "--error-unmatch", plan_rel, cwd=repo))
    problem = ""
    if not tracked:
        problem = f"the plan {plan_rel} is not committed: commit it before the first result"
    elif dirty:
        problem = (
            f"uncommitted changes in {', '.join(dirty[:4])}: run the campaign from a clean, pinned worktree"
        )
    return {"commit": commit, "problem": problem}


sha256 = sha256_file  # a checkpoint's or a cache's digest, as the records hold it


# ---------------------------------------------------------------------------------------------------- the runner
class Campaign(Harness):
    """The harness's stages and single runs, driven by a plan instead of the paper's grid. ``repo``: the checkout
    the campaign runs from (its commit pins the campaign; a relative data path is relative to it)."""

    def __init__(
        self,
        plan: Plan,
        work: Path,
        out: Path,
        device: str = "auto",
        pin: dict | None = None,
        repo: Path = Path("."),
    ):
        self.plan = plan
        self.arms = {a.key: a for a in plan.arms}
        out = out.resolve()
        stem = f"campaign-{plan.name}"
        self.setup(
            plan.preset(),
            [a.grid_config() for a in plan.arms],
            plan.seed_list,
            work=work.resolve(),
            out=out,
            stem=stem,
            keep=out
            / stem,  # the pin, the gate, the records, the caches every arm reads and their stage records
            device=resolve_device(device),
            data=str(input_path(plan.data.get("path", ""), repo)),
            first_seed=plan.first_seed,
            encoder_checkpoint=plan.data.get("encoder_checkpoint", ""),
            repo=repo,
        )
        self.pin = pin if pin is not None else code_pin(plan.path, repo)
        self.plan_sha = sha256(plan.path)
        self.masks_root = input_path(plan.data["masks"], repo) if plan.data.get("masks") else None
        self.state_path = self.keep / "campaign.json"

    @property
    def cache_dir(self) -> Path:
        return self.keep / "caches"

    @property
    def kept_marks(self) -> StageMarks:
        """Stage records committed with the results (``<keep>/stages``: part quality)."""
        return StageMarks(self.keep)

    # -- the pin -----------------------------------------------------------------------------------------------
    def claim(self) -> None:
        """Refuse to mix commits or plans in one campaign; record the pin at the first run."""
        if self.pin["problem"]:
            raise UserError(self.pin["problem"])
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if state:
            if state["commit"] != self.pin["commit"]:
                raise UserError(
                    f"{self.work} was started at commit {state['commit'][:12]}, this code is "
                    f"{self.pin['commit'][:12]}: one campaign never mixes commits (run it from a worktree at "
                    f"{state['commit'][:12]}, or start a new --work)"
                )
            if state["plan_sha256"] != self.plan_sha:
                raise UserError(f"the plan {self.plan.path} changed since {self.work} was started")
            return
        state = {
            "name": self.plan.name,
            "plan": self.plan.path,
            "plan_sha256": self.plan_sha,
            "commit": self.pin["commit"],
            "device": self.device,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.keep.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_path, state)

    def check_caches(self) -> None:
        """Record each part cache's SHA-256 at first use; refuse a campaign whose caches changed since (a part
        encoder retrained on another machine gives other parts: runs must not mix them)."""
        state = json.loads(self.state_path.read_text())
        known = state.setdefault("caches", {})
        for path in sorted(set(self.caches.values())):
            name = Path(path).name
            digest = sha256(Path(path) / "codes.u8")
            if known.setdefault(name, digest) != digest:
                raise UserError(
                    f"part cache {path} differs from the one this campaign started with (sha256 "
                    f"{known[name][:12]}); restore it from the committed results or start a new campaign"
                )
        atomic_write_json(self.state_path, state)

    # -- stages ------------------------------------------------------------------------------------------------
    def stage_data(self) -> dict[str, str]:
        spec = dict(self.plan.data)
        kind = spec.pop("kind", "folder")
        if kind == "folder":
            data = super().stage_data()
            if (
                self.masks_root is not None
            ):  # ground-truth part masks beside the images: the oracle arms read them
                for split in ("train", "val"):
                    masks = self.masks_root / split
                    if not masks.is_dir():
                        raise UserError(
                            f"{masks} does not exist: data.masks holds one label PNG per image, "
                            f"<masks>/{{train,val}}/<class>/<image stem>.png (0 = background, 1..K = parts)"
                        )
                    data[f"masks_{split}"] = str(masks)
            return data
        root = self.work / "data" / "synth"
        if not (root / "synth.json").exists():
            run_stage(
                "data synth",
                stage_config(
                    "data synth",
                    out=str(root),
                    num_images=spec["num_images"],
                    size=spec["size"],
                    seed=spec.get("seed", 0),
                    style=spec.get("style", "random"),
                    val_fraction=spec.get("val_fraction", 0.2),
                    progress=False,
                ),
            )
        return {
            "train": str(root / "train"),
            "val": str(root / "val"),
            "masks_train": str(root / "masks" / "train"),
            "masks_val": str(root / "masks" / "val"),
        }

    def prepare(self) -> None:
        """The part encoder and part learning (once), every part cache the arms read, part diagnostics."""
        self.encoder_ckpt, self.caches = "", {}
        wanted = {}  # (kind, grid[, split]) -> cache name
        for arm in self.plan.arms:
            if not arm.parts:
                continue
            grid = self.grid_size(arm.fine)
            for split in ("train", "val") if arm.fine else ("train",):
                key = (arm.parts, grid) if split == "train" else (arm.parts, grid, split)
                wanted[key] = f"{arm.parts}_grid{grid}{'' if split == 'train' else '_' + split}.cache"
        if "masks_val" in self.data:  # the learned parts are scored on the validation images
            for kind, grid in {k[:2] for k in wanted if k[0] != "masks"}:
                wanted[(kind, grid, "val")] = f"{kind}_grid{grid}_val.cache"
        missing = {k for k, name in wanted.items() if not (self.cache_dir / name / "meta.json").exists()}
        kinds = {k[0] for k in missing}
        # the part encoder and part learning run only while a cache is missing (never again once committed)
        if kinds & {"learned", "attention"}:
            self.encoder_ckpt = self.staged("bootstrap", self.stage_bootstrap)
        if "learned" in kinds:
            self.parts_ckpt = self.staged("parts", self.stage_parts)
        for key in sorted(wanted, key=str):
            split = key[2] if len(key) == 3 else "train"
            self.caches[key] = self.stage_cache(key[0], key[1], split)
        self.check_caches()
        # every part cache with a validation split is diagnosed: against the ground truth where there are masks,
        # and by its usage (parts per image, largest part's share, beside the baselines) where there are none
        for kind, grid in sorted({k[:2] for k in wanted if len(k) == 3 and k[0] != "masks"}):
            name = f"part_quality_{kind}_grid{grid}"
            if self.kept_marks.read(name) is None:
                self.kept_marks.write(name, {"result": self.part_quality(kind, grid)})

    def part_quality(self, kind: str, grid: int) -> dict[str, Any]:
        """The part cache on the validation images, with its baselines: scored against the ground-truth masks where
        the data has them, else only its usage (``parts_used``, ``largest_share``: the collapse check)."""
        cache = self.caches[(kind, grid, "val")]
        cfg = stage_config(
            "parts eval",
            data=self.data["val"],
            cache=cache,
            masks=self.data.get("masks_val"),
            out=str(self.work / "parts_quality" / f"{kind}_grid{grid}.json"),
            **self.common(),
        )
        run_stage("parts eval", cfg)
        metrics = json.loads(Path(cfg.out).read_text())
        return {
            m: metrics[m] for m in ("learned", "attention", "kmeans", "spatial", "ceiling") if m in metrics
        }

    # -- runs --------------------------------------------------------------------------------------------------
    def record_path(self, key: str, seed: int) -> Path:
        return self.runs_dir / f"{key}-seed{seed}.json"

    def verified(self, key: str, seed: int) -> dict[str, Any] | None:
        """The finished record of a run if it is whole and from this campaign's commit (its checkpoint unchanged)."""
        path = self.record_path(key, seed)
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("commit") != self.pin["commit"] or metric(rec, self.plan.primary) is None:
            return None
        # on the machine that wrote it, the checkpoint must still be the one evaluated; on another machine (the
        # work folder is not committed) the committed record stands on its own
        ckpt = rec.get("checkpoint")
        if ckpt and Path(ckpt).is_file() and sha256(ckpt) != rec.get("checkpoint_sha256"):
            return None
        return rec

    def base_record(self, key: str, seed: int) -> dict[str, Any]:
        return {**super().base_record(key, seed), "commit": self.pin["commit"], "campaign": self.plan.name}

    def finish(self, path: Path, record: dict[str, Any]) -> None:
        if record.get("checkpoint"):
            record["checkpoint_sha256"] = sha256(record["checkpoint"])
        atomic_write_json(path, record)
        self.log(
            f"{record['key']} seed {record['seed']}: {self.plan.primary} {metric(record, self.plan.primary):.2f} "
            f"(pretrain {record['pretrain_seconds']:.0f} s, eval {record['eval_seconds']:.0f} s)"
        )

    def run_arm(self, arm: Arm, seed: int) -> bool:
        """Run one arm of one seed unless it is finished and verified; True if it ran."""
        if self.verified(arm.key, seed):
            return False
        path = self.record_path(arm.key, seed)
        if path.exists():  # kept beside, never deleted: a record this campaign cannot vouch for
            self.log(
                f"{path.name}: not verified (other commit, damaged, or its checkpoint changed); rerunning"
            )
            os.replace(path, path.with_suffix(f".rejected-{int(time.time())}.json"))
        self.run_one(arm.grid_config(), seed)
        return True

    def run_untrained(self, seed: int) -> bool:
        """The baseline's architecture at its initialisation (MAE's init), evaluated like a pretrained run."""
        if self.verified(UNTRAINED, seed):
            return False
        ref = self.verified(self.plan.baseline, seed)
        t0 = time.perf_counter()
        metrics = self.evaluate(
            self.work / "runs" / f"{UNTRAINED}-seed{seed}",
            seed,
            {"random_init": True, "checkpoint": ref["checkpoint"], "tokens": "all"},
        )
        rec = {**self.base_record(UNTRAINED, seed), **metrics, "pretrain_seconds": 0.0}
        rec["eval_seconds"] = time.perf_counter() - t0
        self.finish(self.record_path(UNTRAINED, seed), rec)
        return True

    # -- the gate ----------------------------------------------------------------------------------------------
    def gate(self) -> dict[str, Any]:
        """The plan's gate at the first seed (decided once, before any other arm runs); exits if it fails."""
        path = self.runs_dir.parent / "gate.json"
        if path.exists():
            result = json.loads(path.read_text())
        else:
            seed = self.plan.first_seed
            self.run_arm(self.arms[self.plan.baseline], seed)
            self.run_untrained(seed)
            base, init = self.verified(self.plan.baseline, seed), self.verified(UNTRAINED, seed)
            result = gate_result(self.plan, base, init)
            atomic_write_json(path, result)
        self.log(f"gate: {result['sentence']}")
        if not result["passed"]:
            raise UserError(
                f"the gate failed ({result['sentence']}); amend the plan (with the reason), commit it, new --work"
            )
        return result

    # -- driver ------------------------------------------------------------------------------------------------
    def records(self) -> dict[tuple[str, int], dict[str, Any]]:
        recs = {}
        for key in [*self.arms, UNTRAINED]:
            for seed in self.seeds:
                rec = self.verified(key, seed)
                if rec:
                    recs[(key, seed)] = rec
        return recs

    def status(self) -> str:
        recs = self.records()
        done = [s for s in self.seeds if all((a, s) in recs for a in self.arms)]
        left = len(self.seeds) - len(done)
        per_pair = [
            sum(recs[(a, s)]["pretrain_seconds"] + recs[(a, s)]["eval_seconds"] for a in self.arms)
            for s in done
        ]
        line = f"campaign {self.plan.name}: pairs {len(done)}/{len(self.seeds)} done, {left} left"
        if per_pair:
            med = sorted(per_pair)[len(per_pair) // 2]
            eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=med * left)
            line += f"; {med / 60:.1f} min per pair (median); ETA {med * left / 3600:.1f} h"
            line += f" ({eta:%H:%M} UTC)" if left else ""
        return line

    def summarise(self) -> None:
        write_report(self, self.records())

    def run(self, max_runs: int | None = None) -> Path:
        self.claim()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.log(self.status())
        self.data = self.staged("data", self.stage_data)
        if self.arms[self.plan.baseline].parts:  # the baseline reads a cache (e.g. its foreground keep)
            self.prepare()
            self.gate()
        else:  # decide the gate first: a failed gate then costs no part encoder
            self.encoder_ckpt, self.caches = "", {}
            self.gate()
            self.prepare()
        ran = 0
        for seed in self.seeds:
            for arm in self.plan.arm_order(seed):
                if max_runs is not None and ran >= max_runs:
                    self.log(f"stopping after {ran} runs (--max-runs); rerun to resume")
                    self.summarise()
                    return self.out / f"{self.stem}.md"
                if self.run_arm(arm, seed):
                    ran += 1
                    self.summarise()
                    self.log(self.status())
        self.summarise()
        self.log(self.status())
        return self.out / f"{self.stem}.md"


def gate_result(plan: Plan, base: dict[str, Any], init: dict[str, Any]) -> dict[str, Any]:
    """Did pretraining learn (gain over the untrained encoder) and did every probe converge?"""
    gains = {m: metric(base, m) - metric(init, m) for m in plan.gate_metrics}
    learned = max(gains.values()) >= plan.gate_min_gain
    unconverged = []  # the baseline's probes (the issue: "check on seed 0's MAE that every probe has converged")
    for prefix in ("", "kept."):
        node = base.get("kept", {}) if prefix else base
        if not node:
            continue
        if node.get("linprobe_best_on_edge"):
            unconverged.append(f"{prefix}fast probe at the {node['linprobe_best_on_edge']} of its sweep")
        if node.get("logreg_converged") is False:
            unconverged.append(f"{prefix}logistic regression hit its iteration cap")
    gain_text = ", ".join(f"{m} {g:+.2f}" for m, g in gains.items())
    sentence = f"{plan.baseline} vs untrained at seed {plan.first_seed}: {gain_text} (need >= {plan.gate_min_gain:g})"
    sentence += "; probes converged" if not unconverged else f"; not converged: {'; '.join(unconverged)}"
    return {
        "passed": learned and (not unconverged or not plan.gate_converged_probes),
        "gains": gains,
        "unconverged": unconverged,
        "sentence": sentence,
        "decided": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
