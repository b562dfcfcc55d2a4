"""Pre-registered, paired campaigns on the reproduction harness: does semantic-guided masking help? (issue 24)

A campaign is a plan file (``benchmarks/campaigns/<name>.yaml``), committed before its first result, that fixes the
design: the budget (a :class:`repro.Preset`), the data, the arms (masking x part source), the baseline arm, the
seeds, the primary metric, the gate and the decision rule. The runner then

* checks the pin: the plan file is committed and unchanged, the code tree is clean, and every run of the campaign
  comes from one commit (run it from a fixed worktree, ``git worktree add``, while main moves on);
* runs seed by seed, all arms of a seed before the next seed ("pairs"), rotating which arm goes first;
* applies the gate once, at the first seed, before any other arm is run: the baseline must beat the untrained
  encoder by ``gate.min_gain`` on one of ``gate.metrics``, and its probes must have converged (the fast probe's
  chosen learning rate inside its sweep, the logistic regression stopped before its iteration cap); a failed gate
  stops the campaign with the reason (amend the plan, commit it, use a new ``--work``);
* resumes after any stop: a run whose record exists, comes from the campaign's commit and whose checkpoint still
  has the recorded SHA-256 is skipped without re-evaluation; an unfinished run resumes from its own checkpoint;
* prints a status line (pairs done / left, time per pair, ETA) and rewrites the report after every run:
  ``<out>/campaign-<name>.md`` (per-seed table, paired differences with mean, SD, 95 % CI, the equivalence test
  and the decision), ``.json`` and ``.png`` (per-seed paired differences with the CIs).

Decision rule (per comparison, on the primary metric, only when every planned pair is finished - there are no
interim looks): the 95 % CI of the mean paired difference above 0 -> the direction reproduces; its 90 % CI inside
``+-margin`` (two one-sided t tests at 5 %) -> a well-powered null; the 95 % CI below 0 -> the arm hurts here;
otherwise inconclusive.

Usage::

    python benchmarks/campaign.py benchmarks/campaigns/mechanism-synth.yaml --work runs/campaign-mechanism
    python benchmarks/campaign.py PLAN --work DIR --status          # the status line only
    python benchmarks/campaign.py PLAN --work DIR --report-only     # rewrite the report from finished records
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see repro.py: before torch loads

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import repro  # noqa: E402  (sibling module, benchmarks/ is not a package)

from semmae.cli import guard, run_stage, stage_config  # noqa: E402
from semmae.errors import UserError  # noqa: E402
from semmae.eval.paired import decide, paired_stats  # noqa: E402,F401  (the campaign's statistics)

PART_SOURCES = ("", "learned", "attention", "masks")
UNTRAINED = "untrained"  # the eval-only arm: the baseline's architecture at its initialisation (gate seed)


# ------------------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Arm:
    """One pretraining configuration of the campaign (a row of ``arms:`` in the plan)."""

    key: str
    masking: str  # semmae.masking.build_masking name
    gamma: float = 2.0
    parts: str = ""  # part cache feeding the masking (and the foreground keep): learned | attention | masks
    fine: bool = False  # the preset's fine patch + keep the most-foreground fg_keep of the cells
    augment: str = "crop-flip"
    label: str = ""

    def grid_config(self) -> repro.GridConfig:
        return repro.GridConfig(
            self.key, self.masking, self.gamma, self.parts, self.fine, self.augment, rows=()
        )


@dataclass(frozen=True)
class Plan:
    """A pre-registered campaign (``benchmarks/campaigns/<name>.yaml``); see the module docstring."""

    name: str
    question: str
    budget: dict[str, Any]  # repro.Preset fields (``seeds`` is taken from ``seeds`` below)
    data: dict[
        str, Any
    ]  # {kind: folder, path: ...} or {kind: synth, num_images, size, style, seed, val_fraction}
    arms: tuple[Arm, ...]
    baseline: str
    seeds: int
    primary: str  # a record metric, e.g. logreg_top1; "kept.<metric>" reads the kept-quarter evaluation
    first_seed: int = 0
    secondary: tuple[str, ...] = ()
    gate_metrics: tuple[str, ...] = ("logreg_top1", "knn_top1")
    gate_min_gain: float = 4.0
    gate_converged_probes: bool = True  # the gate also needs every probe converged (not on a sweep edge)
    alpha: float = 0.05
    margin: float = 1.0  # equivalence margin, metric points
    paper_effect: float | None = None  # the paper's gain, for the size comparison in the decision
    notes: str = ""
    path: str = ""

    @staticmethod
    def load(path: str | Path) -> Plan:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"campaign: no plan file {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in fields(Plan)} - {"path"}
        unknown = set(raw) - known
        if unknown:
            raise SystemExit(f"campaign: plan {path} has unknown keys {sorted(unknown)}")
        arms = tuple(Arm(**a) for a in raw.pop("arms", ()))
        for key in ("secondary", "gate_metrics"):
            if key in raw:
                raw[key] = tuple(raw[key])
        plan = Plan(arms=arms, path=str(path.resolve()), **raw)
        plan.check()
        return plan

    def check(self) -> None:
        keys = [a.key for a in self.arms]
        if len(set(keys)) != len(keys) or UNTRAINED in keys:
            raise SystemExit(f"campaign: arm keys must be unique and not {UNTRAINED!r}: {keys}")
        if self.baseline not in keys or len(keys) < 2:
            raise SystemExit(f"campaign: baseline {self.baseline!r} must be one of >= 2 arms {keys}")
        for arm in self.arms:
            if arm.parts not in PART_SOURCES:
                raise SystemExit(f"campaign: arm {arm.key}: parts must be one of {PART_SOURCES}")
        if any(a.parts == "masks" for a in self.arms) and self.data.get("kind") != "synth":
            raise SystemExit("campaign: parts: masks needs data with ground-truth masks (kind: synth)")
        if self.seeds < 2:
            raise SystemExit("campaign: a paired campaign needs at least 2 seeds")

    @property
    def comparisons(self) -> list[str]:
        return [a.key for a in self.arms if a.key != self.baseline]

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def preset(self) -> repro.Preset:
        budget = dict(self.budget)
        if "linprobe_blrs" in budget:
            budget["linprobe_blrs"] = tuple(budget["linprobe_blrs"])
        return repro.Preset(**{**budget, "seeds": self.seeds, "name": f"campaign-{self.name}"})

    def arm_order(self, seed: int) -> list[Arm]:
        """The arms of ``seed`` in running order: the plan's order rotated by the seed's index, so each arm goes
        first equally often (two arms: alternating); the gate seed starts with the baseline."""
        arms = sorted(self.arms, key=lambda a: a.key != self.baseline)  # baseline first, then plan order
        shift = (seed - self.first_seed) % len(arms)
        return arms[shift:] + arms[:shift]


# --------------------------------------------------------------------------------------------------- statistics
def metric(record: dict[str, Any], name: str) -> float | None:
    """A record's metric; ``kept.<m>`` reads the kept-quarter evaluation."""
    node: Any = record
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else float(node)


# ------------------------------------------------------------------------------------------------------- the pin
def git(*args: str, cwd: Path = REPO) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def code_pin(plan_path: str) -> dict[str, Any]:
    """The commit this code runs from, and why it cannot pin a campaign (uncommitted plan or code), if it cannot."""
    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": "", "problem": "not a git checkout: a campaign must run from a committed tree"}
    dirty = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if line[3:].startswith(("src/", "benchmarks/", "configs/", "pyproject.toml"))
    ]
    plan_rel = os.path.relpath(plan_path, REPO)
    tracked = bool(git("ls-files", "--error-unmatch", plan_rel))
    problem = ""
    if not tracked:
        problem = f"the plan {plan_rel} is not committed: commit it before the first result"
    elif dirty:
        problem = (
            f"uncommitted changes in {', '.join(dirty[:4])}: run the campaign from a clean, pinned worktree"
        )
    return {"commit": commit, "problem": problem}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- the runner
class Campaign(repro.Harness):
    """The harness's stages and single runs, driven by a plan instead of the paper's grid."""

    def __init__(self, plan: Plan, work: Path, out: Path, device: str = "auto", pin: dict | None = None):
        self.plan, self.p = plan, plan.preset()
        data_path = Path(plan.data.get("path", ""))  # a relative path is relative to the repository
        self.args = argparse.Namespace(
            data=str(data_path if data_path.is_absolute() else (REPO / data_path).resolve()),
            seed=plan.first_seed,
            encoder_checkpoint=plan.data.get("encoder_checkpoint", ""),
            encoder="",
        )
        self.configs = [a.grid_config() for a in plan.arms]
        self.arms = {a.key: a for a in plan.arms}
        self.seeds = plan.seed_list
        self.work = work.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = device if device != "auto" else ("cuda" if repro._cuda() else "cpu")
        self.out = out.resolve()
        self.stem = f"campaign-{plan.name}"
        # what must outlive a machine (committed with the results): the pin, the gate, the per-run records, the
        # part caches every arm reads and their stage records; --work holds only what can be rebuilt
        self.keep = self.out / self.stem
        self.runs_dir = self.keep / "per-run"
        self.stage_seconds: dict[str, float] = {}
        self.pin = pin if pin is not None else code_pin(plan.path)
        self.plan_sha = sha256(plan.path)
        self.state_path = self.keep / "campaign.json"

    @property
    def cache_dir(self) -> Path:
        return self.keep / "caches"

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
        from semmae.utils.io import atomic_write_json

        self.keep.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_path, state)

    def check_caches(self) -> None:
        """Record each part cache's SHA-256 at first use; refuse a campaign whose caches changed since (a part
        encoder retrained on another machine gives other parts: runs must not mix them)."""
        from semmae.utils.io import atomic_write_json

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
            return super().stage_data()
        if kind != "synth":
            raise UserError(f"data kind {kind!r}: expected folder or synth")
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
            grid = self.p.img_size // (self.p.fine_patch if arm.fine else self.patch)
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
        if "masks_val" in self.data:
            for kind, grid in sorted({k[:2] for k in wanted if k[0] != "masks"}):
                marker = self.keep / "stages" / f"part_quality_{kind}_grid{grid}.json"
                if not marker.exists():
                    from semmae.utils.io import atomic_write_json

                    marker.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(marker, {"result": self.part_quality(kind, grid)})

    def part_quality(self, kind: str, grid: int) -> dict[str, Any]:
        """The part cache scored against the ground truth on the validation images (with its baselines)."""
        cache = self.caches[(kind, grid, "val")]
        cfg = stage_config(
            "parts eval",
            data=self.data["val"],
            cache=cache,
            masks=self.data["masks_val"],
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
        from semmae.utils.io import atomic_write_json

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
        from semmae.utils.io import atomic_write_json

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


# ----------------------------------------------------------------------------------------------------- the report
def comparison_stats(plan: Plan, recs: dict, metrics: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm in plan.comparisons:
        out[arm] = {}
        for m in metrics:
            diffs, seeds = [], []
            for s in plan.seed_list:
                a, b = recs.get((arm, s)), recs.get((plan.baseline, s))
                if a and b and metric(a, m) is not None and metric(b, m) is not None:
                    diffs.append(metric(a, m) - metric(b, m))
                    seeds.append(s)
            out[arm][m] = {**paired_stats(diffs, plan.alpha, plan.margin), "seeds": seeds}
    return out


def write_report(c: Campaign, recs: dict[tuple[str, int], dict[str, Any]]) -> None:
    from semmae.utils.io import atomic_write_json, atomic_write_text

    plan = c.plan
    metrics = [plan.primary, *plan.secondary]
    stats = comparison_stats(plan, recs, metrics)
    complete = all((a.key, s) in recs for a in plan.arms for s in plan.seed_list)
    decisions = {}
    for arm in plan.comparisons:
        verdict, sentence = decide(stats[arm][plan.primary], plan.margin, plan.paper_effect)
        decisions[arm] = {"verdict": verdict if complete else "interim", "sentence": sentence}
    gate_path = c.runs_dir.parent / "gate.json"
    gate = json.loads(gate_path.read_text()) if gate_path.exists() else None
    quality = {k: v["result"] for k, v in _stage_records(c.keep).items() if k.startswith("part_quality")}
    summary = {
        "plan": {k: v for k, v in asdict(plan).items() if k != "path"},
        "plan_file": os.path.relpath(plan.path, REPO),
        "plan_sha256": c.plan_sha,
        "commit": c.pin["commit"],
        "complete": complete,
        "status": c.status(),
        "gate": gate,
        "part_quality": quality,
        "stats": stats,
        "decisions": decisions,
        "runs": {f"{k}-seed{s}": r for (k, s), r in sorted(recs.items())},
    }
    c.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(c.out / f"{c.stem}.json", summary)
    atomic_write_text(c.out / f"{c.stem}.md", render_markdown(c, summary, metrics))
    if any(stats[a][plan.primary]["n"] for a in plan.comparisons):
        plot_differences(plan, stats, c.out / f"{c.stem}.png")


def _stage_records(work: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((work / "stages").glob("*.json"))}


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def render_markdown(c: Campaign, s: dict[str, Any], metrics: list[str]) -> str:
    plan = c.plan
    arms = [a.key for a in plan.arms]
    lines = [
        f"# Campaign `{plan.name}`: {plan.question}",
        "",
        f"Plan: `{s['plan_file']}` (sha256 {s['plan_sha256'][:12]}), committed before the first result; every run"
        f" from commit `{s['commit'][:12]}`. Generated by `python benchmarks/campaign.py {s['plan_file']}`.",
        "",
        f"**Status:** {s['status']}."
        + ("" if s["complete"] else " Interim: no decision before every pair is in."),
        "",
        "## Design",
        "",
        f"- Arms ({len(arms)}): "
        + "; ".join(
            f"`{a.key}` = {a.label or a.masking} (masking {a.masking}"
            + (f", gamma {a.gamma:g}" if a.masking.startswith("adaptive") else "")
            + (f", parts {a.parts}" if a.parts else "")
            + (f", patch {c.p.fine_patch} + keep {c.p.fg_keep:g}" if a.fine else f", patch {c.patch}")
            + ")"
            for a in plan.arms
        ),
        f"- Baseline `{plan.baseline}`; {plan.seeds} paired seeds ({plan.first_seed}..{plan.seed_list[-1]}), all arms"
        " of a seed before the next, the first arm rotating per seed.",
        f"- Budget: model `{c.p.model}` depth {c.p.depth}, decoder depth {c.p.decoder_depth}, {c.p.img_size} px, "
        f"{c.p.epochs} epochs (warm-up {c.p.warmup_epochs}), batch {c.p.batch_size}, blr {c.p.blr:g}; data "
        f"{_data_text(plan.data)}.",
        f"- Primary metric `{plan.primary}`; secondary {', '.join(f'`{m}`' for m in plan.secondary) or 'none'}.",
        f"- Decision (primary, all pairs): 95 % CI > 0 -> helps; 90 % CI inside +-{plan.margin:g} -> well-powered "
        f"null; 95 % CI < 0 -> hurts; else inconclusive. Gate at seed {plan.first_seed}: `{plan.baseline}` beats "
        f"the untrained encoder by >= {plan.gate_min_gain:g} on {' or '.join(plan.gate_metrics)}, probes converged.",
    ]
    if plan.notes:
        lines += ["", plan.notes.strip()]
    if s["gate"]:
        lines += ["", f"**Gate:** {'passed' if s['gate']['passed'] else 'FAILED'} - {s['gate']['sentence']}."]
    if s["part_quality"]:
        lines += ["", "## Part quality (validation images vs ground-truth masks)", ""]
        cols = ("fg_iou", "nmi_image", "miou_image", "parts_used")
        lines += ["| cache | method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for stage, res in s["part_quality"].items():
            for method, m in res.items():
                lines.append(
                    f"| {stage.removeprefix('part_quality_')} | {method} | "
                    + " | ".join(_fmt(m.get(k), ".3f") for k in cols)
                    + " |"
                )
    lines += ["", "## Decisions", ""]
    for arm in plan.comparisons:
        d = s["decisions"][arm]
        head = "interim, not a decision" if d["verdict"] == "interim" else d["verdict"]
        lines.append(f"- `{arm}` - `{plan.baseline}` on `{plan.primary}`: **{head}** - {d['sentence']}.")
    lines += ["", "## Paired differences (arm - baseline, same seed)", ""]
    lines += [
        "| comparison | metric | n | mean | SD | 95 % CI | 90 % CI | p (two-sided) | p (equivalence +-"
        f"{plan.margin:g}) | arm ahead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in plan.comparisons:
        for m in metrics:
            st = s["stats"][arm][m]
            ci95 = f"[{st['ci95'][0]:+.2f}, {st['ci95'][1]:+.2f}]" if "ci95" in st else "-"
            ci90 = f"[{st['ci90'][0]:+.2f}, {st['ci90'][1]:+.2f}]" if "ci90" in st else "-"
            lines.append(
                f"| `{arm}` - `{plan.baseline}` | `{m}` | {st['n']} | {_fmt(st.get('mean'), '+.2f')} | "
                f"{_fmt(st.get('sd'))} | {ci95} | {ci90} | {_fmt(st.get('p_two_sided'), '.3f')} | "
                f"{_fmt(st.get('p_equivalence'), '.3f')} | "
                + (f"{st['wins']}/{st['n']}" if "wins" in st else "-")
                + " |"
            )
    lines += ["", f"## Per seed (`{plan.primary}`, then secondary metrics)", ""]
    cols = [*arms, UNTRAINED]
    for m in metrics:
        lines += [f"`{m}`", "", "| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for seed in plan.seed_list:
            row = [
                _fmt(metric(s["runs"][f"{k}-seed{seed}"], m)) if f"{k}-seed{seed}" in s["runs"] else ""
                for k in cols
            ]
            lines.append(f"| {seed} | " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "## Time",
        "",
        "| arm | runs | pretrain s (median) | eval s (median) | img/s (median) |",
        "|---|---|---|---|---|",
    ]
    for k in cols:
        rs = [r for key, r in s["runs"].items() if key.rsplit("-seed", 1)[0] == k]
        if rs:
            med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
            lines.append(
                f"| `{k}` | {len(rs)} | {_fmt(med([r['pretrain_seconds'] for r in rs]), '.0f')} | "
                f"{_fmt(med([r['eval_seconds'] for r in rs]), '.0f')} | "
                f"{_fmt(med([r['img_per_s'] for r in rs if r.get('img_per_s')]), '.0f')} |"
            )
    if any(s["stats"][a][plan.primary]["n"] for a in plan.comparisons):
        lines += ["", f"![paired differences]({c.stem}.png)"]
    return "\n".join(lines) + "\n"


def _data_text(data: dict[str, Any]) -> str:
    if data.get("kind") == "synth":
        return (
            f"`semmae data synth --style {data.get('style', 'random')}`, {data['num_images']} images at "
            f"{data['size']} px (val fraction {data.get('val_fraction', 0.2):g}, seed {data.get('seed', 0)})"
        )
    return f"`{data.get('path')}`"


def plot_differences(plan: Plan, stats: dict, path: Path) -> None:
    """Per-seed paired differences (dots) with the mean and its 95 % (thick) / 90 % (thin) CIs, per comparison, on
    the primary metric; the +-margin band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = plan.comparisons
    fig, ax = plt.subplots(figsize=(1.8 + 1.9 * len(arms), 4.2), dpi=120)
    ax.axhspan(-plan.margin, plan.margin, color="0.92", zorder=0, label=f"+-{plan.margin:g} (equivalence)")
    ax.axhline(0, color="0.4", lw=0.8)
    for i, arm in enumerate(arms):
        st = stats[arm][plan.primary]
        if not st["n"]:
            continue
        xs = [i + 0.18 * ((j % 5) - 2) / 2 for j in range(st["n"])]
        ax.scatter(xs, st["diffs"], s=18, color="tab:blue", alpha=0.7, zorder=3)
        if "ci95" in st:
            ax.plot([i + 0.32] * 2, st["ci90"], color="tab:red", lw=1.2, zorder=4)
            ax.errorbar(
                i + 0.32,
                st["mean"],
                yerr=[[st["mean"] - st["ci95"][0]], [st["ci95"][1] - st["mean"]]],
                fmt="o",
                color="tab:red",
                capsize=5,
                lw=2.5,
                zorder=5,
            )
    ax.set_xticks(range(len(arms)), [f"{a}\n- {plan.baseline}" for a in arms])
    ax.set_ylabel(f"{plan.primary}: arm - baseline (points)")
    ax.set_title(f"{plan.name}: paired differences (dots: seeds; red: mean, 95 % / 90 % CI)", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan", help="the plan file (benchmarks/campaigns/<name>.yaml), committed")
    ap.add_argument("--work", required=True, help="campaign folder (runs, caches, state); reuse it to resume")
    ap.add_argument("--out", default=str(HERE / "results"), help="where campaign-<name>.md/.json/.png go")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (resume later)")
    ap.add_argument("--status", action="store_true", help="print the status line and exit")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from finished records")
    return ap


def main(argv: list[str] | None = None, pin: dict | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = Plan.load(args.plan)

    def run() -> None:
        c = Campaign(plan, Path(args.work), Path(args.out), args.device, pin)
        if args.status or args.report_only:
            if c.state_path.exists():  # report the campaign's own commit, not this checkout's
                c.pin = {**c.pin, "commit": json.loads(c.state_path.read_text())["commit"]}
            if args.report_only:
                c.summarise()
            print(c.status(), flush=True)
            return
        c.run(args.max_runs)

    return guard("benchmarks/campaign.py", run)


if __name__ == "__main__":
    sys.exit(main())
