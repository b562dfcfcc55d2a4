"""Pre-registered, paired campaigns on the reproduction harness: does semantic-guided masking help? (issue 24)

A campaign is a plan file (``benchmarks/campaigns/<name>.yaml``), committed before its first result, that fixes the
design: the budget (a :class:`~semmae_lab.preset.Preset`), the data, the arms (masking x part source), the
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
  (:mod:`semmae_lab.campaign_report`) after every run.

What outlives a machine (committed with the results) lies under ``<out>/campaign-<name>/``: ``campaign.json`` (the
pin, the plan's hash and text, the part caches' hashes), ``gate.json``, ``per-run/<arm>-seed<s>.json``, ``caches/``
and ``stages/`` (part-quality records); the work folder holds only what can be rebuilt.

Integrity (issue 37):

* **One work folder, one plan.** The first run writes ``<work>/.semmae-campaign.json`` (atomically): the plan's name
  and SHA-256. A plan of another name or hash given that ``--work`` is refused in one line before anything is
  written (``--status`` and ``--report-only`` refuse it too, and never write the binding). A work folder without a
  binding (made before bindings) is bound only when empty, or adopted when all of this holds: this plan's campaign
  state exists with the same name and hash; every folder under ``runs/`` is a planned run of this plan
  (``<arm>-seed<s>``); no run's ``config.yaml`` reads another campaign's part caches and no record of another
  campaign under ``<out>`` cites a checkpoint in it; and something names this plan (the folder is called
  ``<name>``, as ``run.sh`` makes it, a run reads ``campaign-<name>/caches``, or a record of this campaign cites a
  checkpoint in it). Otherwise it is refused, naming why; nothing is ever deleted.
* **The report uses the recorded plan.** ``--status`` / ``--report-only`` read the plan the campaign state recorded
  (its text in ``campaign.json``, or, for campaigns started before the text was kept, the plan file at the
  campaign's commit, either checked against the recorded SHA-256). A plan file that differs is named in one line
  and the report is drawn from the recorded plan; when the recorded plan cannot be recovered nothing is reported.
  The report says "committed before the first result" only when the plan it uses has the recorded hash.
* **Records carry a content hash.** The runner writes ``record_sha256`` (SHA-256 of the record's canonical JSON
  without that field, :func:`record_digest`) into every per-run record, and the campaign state says it does
  (``records_hashed``). A record whose hash does not match - or, in such a campaign, that has none - is not
  counted: it is excluded from the means and listed as ``edited: per-run/<file>``. Records without a hash from a
  campaign started before hashes are counted as before; the report says how many there are.

Arms (issue 40): an arm's ``alpha_max`` (the adaptive schedule's cap, ``semmae pretrain --alpha-max``) goes into
its pretraining config, as ``gamma`` does, and into its record; the plan's hash pins it, and a resumed run whose
config differs is refused by the run folder.

Decision rule (per contrast - every arm against ``baseline``, or the plan's ``contrasts:`` - on the primary metric,
only when every planned pair is finished - there are no interim looks): the 95 % CI of the mean paired difference
above 0 -> the direction reproduces; its 90 % CI inside ``+-margin`` (two one-sided t tests at 5 %) -> a
well-powered null; the 95 % CI below 0 -> the arm hurts here; otherwise inconclusive
(:func:`semmae.eval.paired.decide`). Before that the report states numbers only (:func:`semmae.eval.paired.interim`).
Beside each decision, descriptive only: the Wilcoxon signed-rank p and the range of the 95 % CI's bounds with one
seed left out (:func:`semmae.eval.paired.paired_stats`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from semmae.cli import run_stage, stage_config
from semmae.engine.stage_runner import Stage, StageRunner
from semmae.errors import UserError
from semmae.utils.io import atomic_write_json, sha256_file
from semmae_lab.campaign_report import comparison_stats, decisions_of, write_report
from semmae_lab.harness import Harness, resolve_device
from semmae_lab.plan import UNTRAINED, Arm, Plan, metric


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

#: the file binding a campaign's ``--work`` folder to its plan (name and SHA-256), written at the folder's first use
BINDING_NAME = ".semmae-campaign.json"
#: the field of a per-run record holding the SHA-256 of the rest of the record (:func:`record_digest`)
RECORD_HASH = "record_sha256"


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the platform has none): recorded at the start and end of
    every run, so a report can say what else shared the machine while its wall clocks were taken."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys, no spaces), the ``record_sha256`` field left out."""
    body = {k: v for k, v in record.items() if k != RECORD_HASH}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def read_binding(work: Path, name: str, plan_sha: str) -> dict[str, Any] | None:
    """``work``'s binding (:data:`BINDING_NAME`), or ``None`` when it has none; refused (:class:`UserError`, one
    line) when it binds another plan than ``name`` with ``plan_sha``, or cannot be read. Reads only."""
    path = Path(work) / BINDING_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UserError(f"{path} is not a campaign binding (not a plain file); nothing touched")
    if not path.exists():
        return None
    try:
        binding = json.loads(path.read_text())
        bound, sha = str(binding["name"]), str(binding["plan_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path} is damaged: cannot tell which plan --work belongs to; nothing touched"
        ) from None
    if bound != name or sha != plan_sha:
        what = "another version of this plan" if bound == name else f"campaign {bound}"
        raise UserError(
            f"--work {work} belongs to {what} (plan sha256 {sha[:12]}), not to {name} (plan sha256 "
            f"{plan_sha[:12]}): one work folder per plan, use another --work; nothing touched"
        )
    return binding


def _git_blob(repo: Path, commit: str, rel: str) -> bytes | None:
    try:
        out = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=repo, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


def _plan_from_bytes(data: bytes, shown_as: str) -> Plan:
    """A plan loaded from its recorded bytes; ``path`` names the plan file it stands for (for display)."""
    with tempfile.TemporaryDirectory(prefix="semmae-plan-") as tmp:
        path = Path(tmp) / "recorded.yaml"
        path.write_bytes(data)
        plan = Plan.load(path)
    return dataclasses.replace(plan, path=shown_as)


def recorded_plan(plan: Plan, state: dict[str, Any], repo: Path) -> tuple[Plan, str, str]:
    """The plan a campaign recorded at its start: ``(plan, its sha256, note)``. ``note`` is one line when the plan
    file given differs from the recorded one (then the recorded plan is returned: from the state's ``plan_text``, the
    recorded plan path, or the plan file at the campaign's commit, whichever has the recorded hash); refused
    (:class:`UserError`) when the recorded plan cannot be recovered."""
    want, have = state.get("plan_sha256", ""), sha256(plan.path)
    if have == want:
        return plan, have, ""
    shown = os.path.relpath(plan.path, repo)
    commit = state.get("commit", "")
    candidates: list[bytes | None] = []
    if isinstance(state.get("plan_text"), str):
        candidates.append(state["plan_text"].encode())
    recorded_path = Path(state.get("plan", ""))
    if state.get("plan") and recorded_path.is_file():
        candidates.append(recorded_path.read_bytes())
    if commit:
        for rel in dict.fromkeys([shown, f"benchmarks/campaigns/{plan.name}.yaml"]):
            if not rel.startswith(".."):
                candidates.append(_git_blob(repo, commit, rel))
    for data in candidates:
        if data is not None and hashlib.sha256(data).hexdigest() == want:
            note = (
                f"the plan {shown} (sha256 {have[:12]}) differs from the one campaign {plan.name} recorded "
                f"(sha256 {want[:12]}); reporting from the recorded plan"
            )
            return _plan_from_bytes(data, plan.path), want, note
    raise UserError(
        f"the plan {shown} (sha256 {have[:12]}) is not the one campaign {plan.name} recorded (sha256 {want[:12]}), "
        f"which cannot be recovered (not in campaign.json, not at commit {commit[:12] or '?'}); nothing reported"
    )


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
        plan_sha: str | None = None,
    ):
        self.plan = plan
        self.arms = {a.key: a for a in plan.arms}
        self._load_start: float | None = None  # the load average when the current run started
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
        # a recorded plan (--status, --report-only) brings its recorded hash
        self.plan_sha = plan_sha or sha256(plan.path)
        self.plan_note = ""  # one line when the plan file differs from the recorded plan the report uses
        self.excluded: list[str] = []  # "edited: per-run/<file>": records not counted (see records())
        self.unhashed = 0  # counted records without a content hash (written before records were hashed)
        self.masks_root = input_path(plan.data["masks"], repo) if plan.data.get("masks") else None
        self.state_path = self.keep / "campaign.json"

    @property
    def cache_dir(self) -> Path:
        return self.keep / "caches"

    @functools.cached_property
    def kept_stages(self) -> StageRunner:
        """The stages whose records are committed with the results (``<keep>/stages``: part quality)."""
        return StageRunner(self.keep, self.log)

    # -- the work folder's plan ---------------------------------------------------------------------------------
    @property
    def binding_path(self) -> Path:
        return self.work / BINDING_NAME

    def read_binding(self) -> dict[str, Any] | None:
        """The work folder's binding, or ``None`` when it has none; refused when it binds another plan."""
        return read_binding(self.work, self.plan.name, self.plan_sha)

    def adoption_problem(self, state: dict[str, Any]) -> str:
        """Why an unbound work folder may not be bound to this plan ("" when it may): see the module docstring."""
        entries = sorted(n for n in os.listdir(self.work) if n != BINDING_NAME) if self.work.is_dir() else []
        if not entries:
            return ""
        head = f"--work {self.work} holds files from before campaigns bound their work folder ({', '.join(entries[:3])})"
        tail = "use a new --work (nothing was touched)"
        if state.get("name") != self.plan.name or state.get("plan_sha256") != self.plan_sha:
            return f"{head} and no started campaign {self.plan.name} with this plan vouches for them: {tail}"
        planned = {f"{k}-seed{s}" for k in [*self.arms, UNTRAINED] for s in self.seeds}
        runs = self.work / "runs"
        names = sorted(os.listdir(runs)) if runs.is_dir() else []
        stray = [n for n in names if n not in planned]
        if stray:
            return f"{head}, and runs/{stray[0]} is not a run of {self.plan.name}: {tail}"
        named = {self.plan.name} if self.work.name == self.plan.name else set()  # run.sh: <WORK>/<plan name>
        for n in names:  # a run reading part caches names the campaign they belong to
            try:
                text = (runs / n / "config.yaml").read_text()
            except OSError:
                continue
            named |= set(re.findall(r"campaign-([^/\s'\"]+)/caches/", text))
        # records of any campaign under --out that cite a checkpoint in it
        for rec_path in sorted(self.out.glob("campaign-*/per-run/*.json")):
            try:
                rec = json.loads(rec_path.read_text())
                ckpt = Path(str(rec.get("checkpoint") or "")).resolve()
            except (OSError, ValueError, AttributeError):
                continue
            if rec.get("checkpoint") and self.work in ckpt.parents:
                named.add(str(rec.get("campaign") or rec_path.parent.parent.name.removeprefix("campaign-")))
        others = sorted(named - {self.plan.name})
        if others:
            return f"{head}, and it holds runs of campaign {others[0]}: {tail}"
        if self.plan.name not in named:
            return f"{head}, and nothing in it names campaign {self.plan.name}: {tail}"
        return ""

    # -- the pin -----------------------------------------------------------------------------------------------
    def claim(self) -> None:
        """Refuse to mix commits or plans in one campaign or one work folder; record the pin and bind the work
        folder to the plan at the first run."""
        if self.pin["problem"]:
            raise UserError(self.pin["problem"])
        bound = self.read_binding() is not None
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
        if not bound and (why := self.adoption_problem(state)):
            raise UserError(why)
        if not state:
            plan_bytes = Path(self.plan.path).read_bytes()
            state = {
                "name": self.plan.name,
                "plan": self.plan.path,
                "plan_sha256": self.plan_sha,
                "plan_text": plan_bytes.decode("utf-8", errors="replace"),
                "commit": self.pin["commit"],
                "device": self.device,
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "records_hashed": True,  # every per-run record carries record_sha256
            }
            if hashlib.sha256(state["plan_text"].encode()).hexdigest() != self.plan_sha:
                del state["plan_text"]  # not UTF-8: the plan at the commit stands for it
            self.keep.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.state_path, state)
        if not bound:
            atomic_write_json(
                self.binding_path,
                {
                    "name": self.plan.name,
                    "plan_sha256": self.plan_sha,
                    "bound": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "adopted": any(n != BINDING_NAME for n in os.listdir(self.work)),
                },
            )

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
            self.encoder_ckpt = self.runner.run(self.part_encoder_stage())
        if "learned" in kinds:
            self.parts_ckpt = self.runner.run(Stage("parts", self.stage_parts))
        for key in sorted(wanted, key=str):
            split = key[2] if len(key) == 3 else "train"
            self.caches[key] = self.stage_cache(key[0], key[1], split)
        self.check_caches()
        # every part cache with a validation split is diagnosed: against the ground truth where there are masks,
        # and by its usage (parts per image, largest part's share, beside the baselines) where there are none
        for kind, grid in sorted({k[:2] for k in wanted if len(k) == 3 and k[0] != "masks"}):
            quality = functools.partial(self.part_quality, kind, grid)
            self.kept_stages.run(Stage(f"part_quality_{kind}_grid{grid}", quality))

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
            overwrite=True,  # the campaign's own file (a stage that ran again after a stop)
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

    def records_hashed(self) -> bool:
        """Whether this campaign's runner hashes every record (its state says so: started after hashes)."""
        try:
            return bool(json.loads(self.state_path.read_text()).get("records_hashed"))
        except (OSError, ValueError, AttributeError):
            return False

    def check_record(
        self, key: str, seed: int, hashed: bool | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        """``(record, problem)``: the record if it is whole, unedited and from this campaign's commit (its checkpoint
        unchanged), else ``None``; ``problem`` is ``"edited"`` (content hash wrong, or missing where the campaign
        hashes records), ``"damaged"`` (not JSON), ``"unhashed"`` (counted: from before hashes) or ""."""
        path = self.record_path(key, seed)
        try:
            rec = json.loads(path.read_text())
        except FileNotFoundError:
            return None, ""
        except (OSError, ValueError):
            return None, "damaged"
        if not isinstance(rec, dict):
            return None, "damaged"
        digest = rec.get(RECORD_HASH)
        if digest is not None and digest != record_digest(rec):
            return None, "edited"
        if rec.get("commit") != self.pin["commit"] or metric(rec, self.plan.primary) is None:
            return None, ""
        if digest is None and (self.records_hashed() if hashed is None else hashed):
            return None, "edited"
        # on the machine that wrote it, the checkpoint must still be the one evaluated; on another machine (the
        # work folder is not committed) the committed record stands on its own
        ckpt = rec.get("checkpoint")
        if ckpt and Path(ckpt).is_file() and sha256(ckpt) != rec.get("checkpoint_sha256"):
            return None, ""
        return rec, "unhashed" if digest is None else ""

    def verified(self, key: str, seed: int) -> dict[str, Any] | None:
        """The finished record of a run if it is whole, unedited and from this campaign's commit."""
        return self.check_record(key, seed)[0]

    def base_record(self, key: str, seed: int) -> dict[str, Any]:
        return {**super().base_record(key, seed), "commit": self.pin["commit"], "campaign": self.plan.name}

    def pretrain_config(self, out: Path, cfg: Any, seed: int, epochs: int, cache: str | None) -> Any:
        """The harness's pretraining config, with the arm's ``alpha_max`` (the adaptive schedule's cap) where the
        run is an arm of the plan (the part encoder is not)."""
        config = super().pretrain_config(out, cfg, seed, epochs, cache)
        arm = self.arms.get(cfg.key)
        if arm is None or arm.grid_config() != cfg:
            return config
        return dataclasses.replace(config, alpha_max=arm.alpha_max)

    def finish(self, path: Path, record: dict[str, Any]) -> None:
        record["machine_load"] = {"cpus": os.cpu_count(), "start": self._load_start, "end": load_average()}
        arm = self.arms.get(record.get("key", ""))
        if arm is not None and "masking" in record:  # a pretrained arm (not the untrained encoder)
            record["alpha_max"] = arm.alpha_max
        if record.get("checkpoint"):
            record["checkpoint_sha256"] = sha256(record["checkpoint"])
        # as it will read back (tuples as lists), then its content hash
        record = json.loads(json.dumps(record))
        record[RECORD_HASH] = record_digest(record)
        atomic_write_json(path, record)
        self.log(
            f"{record['key']} seed {record['seed']}: {self.plan.primary} {metric(record, self.plan.primary):.2f} "
            f"(pretrain {record['pretrain_seconds']:.0f} s, eval {record['eval_seconds']:.0f} s)"
        )

    def run_arm(self, arm: Arm, seed: int) -> bool:
        """Run one arm of one seed unless it is finished and verified; True if it ran."""
        rec, problem = self.check_record(arm.key, seed)
        if rec:
            return False
        path = self.record_path(arm.key, seed)
        if path.exists():  # kept beside, never deleted: a record this campaign cannot vouch for
            why = (
                "edited after the runner wrote it (content hash)"
                if problem == "edited"
                else "not verified (other commit, damaged, or its checkpoint changed)"
            )
            self.log(f"{path.name}: {why}; kept beside, rerunning")
            os.replace(path, path.with_suffix(f".rejected-{int(time.time())}.json"))
        self._load_start = load_average()
        self.run_one(arm.grid_config(), seed)
        return True

    def run_untrained(self, seed: int) -> bool:
        """The baseline's architecture at its initialisation (MAE's init), evaluated like a pretrained run."""
        if self.verified(UNTRAINED, seed):
            return False
        ref = self.verified(self.plan.baseline, seed)
        self._load_start = load_average()
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
        """The counted records; sets ``excluded`` (``"edited: per-run/<file>"``) and ``unhashed``."""
        recs, excluded, unhashed = {}, [], 0
        hashed = self.records_hashed()
        for key in [*self.arms, UNTRAINED]:
            for seed in self.seeds:
                rec, problem = self.check_record(key, seed, hashed)
                if rec:
                    recs[(key, seed)] = rec
                    unhashed += problem == "unhashed"
                elif problem in ("edited", "damaged"):
                    excluded.append(f"{problem}: {self.runs_dir.name}/{self.record_path(key, seed).name}")
        self.excluded, self.unhashed = excluded, unhashed
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

    def summary(self, recs: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
        """What the report states (its ``.json``): the plan and its pin, the records counted and those left out, the
        gate, the part quality, the paired statistics and the decisions."""
        plan = self.plan
        metrics = [plan.primary, *plan.secondary]
        stats = comparison_stats(plan, recs, metrics)
        complete = all((a.key, s) in recs for a in plan.arms for s in plan.seed_list)
        decisions = decisions_of(plan, stats, complete)
        gate_path = self.runs_dir.parent / "gate.json"
        gate = json.loads(gate_path.read_text()) if gate_path.exists() else None
        quality = {
            k: v["result"]
            for k, v in self.kept_stages.marks.records().items()
            if k.startswith("part_quality")
        }
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        return {
            "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "path"},
            "plan_file": os.path.relpath(plan.path, self.repo),
            "plan_sha256": self.plan_sha,
            # the plan used is the one the campaign state recorded at its first run (only then "committed before the
            # first result" holds); plan_note: the plan file now differs from it
            "plan_recorded": isinstance(state, dict)
            and state.get("name") == plan.name
            and state.get("plan_sha256") == self.plan_sha,
            "plan_note": self.plan_note,
            "commit": self.pin["commit"],
            "excluded": list(self.excluded),  # "edited: per-run/<file>": not counted
            "unhashed_records": self.unhashed,  # counted records without a content hash (from before hashes)
            "complete": complete,
            "status": self.status(),
            "gate": gate,
            "part_quality": quality,
            "stats": stats,
            "decisions": decisions,
            "runs": {f"{k}-seed{s}": r for (k, s), r in sorted(recs.items())},
        }

    def summarise(self) -> None:
        write_report(self.summary(self.records()), self.plan, self.p, self.patch, self.out, self.stem)

    def run(self, max_runs: int | None = None) -> Path:
        self.claim()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.log(self.status())
        self.data = self.runner.run(Stage("data", self.stage_data))
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


def recorded_campaign(
    plan: Plan,
    work: Path,
    out: Path,
    device: str = "auto",
    pin: dict | None = None,
    repo: Path = Path("."),
    need_state: bool = True,
) -> Campaign:
    """The campaign as its state recorded it, for ``--status`` and ``--report-only``: the recorded plan and hash
    (:func:`recorded_plan`; ``plan_note`` says when the plan file differs), the recorded commit, the work folder's
    binding checked (never written). Without a state: refused when ``need_state``, else the plan as given."""
    state_path = out.resolve() / f"campaign-{plan.name}" / "campaign.json"
    if not state_path.exists():
        read_binding(work.resolve(), plan.name, sha256(plan.path))
        if need_state:
            raise UserError(
                f"no campaign state {state_path}: campaign {plan.name} has not started there (check --out); "
                "nothing reported"
            )
        return Campaign(plan, work, out, device, pin, repo=repo)
    try:
        state = json.loads(state_path.read_text())
        damaged = not (isinstance(state.get("commit"), str) and isinstance(state.get("plan_sha256"), str))
    except (OSError, ValueError, AttributeError):
        damaged = True
    if damaged:
        raise UserError(f"{state_path} is damaged (no commit or plan hash); nothing reported")
    used, sha, note = recorded_plan(plan, state, repo)
    c = Campaign(used, work, out, device, pin, repo=repo, plan_sha=sha)
    c.pin = {**c.pin, "commit": state["commit"]}  # report the campaign's own commit, not this checkout's
    c.plan_note = note
    c.read_binding()
    return c


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
