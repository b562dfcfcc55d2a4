"""A run directory: who owns it, and what a run records in it (config, ``log.jsonl``, TensorBoard events).

Every verb that writes a run folder (``pretrain``, ``parts train``, ``linprobe``, ``finetune``, ``segment train``,
``demo``, ...) takes it with one call, :func:`claim_run_dir`, before it writes anything, and keeps it until it
returns:

- **One writer.** An exclusive ``fcntl.flock`` on ``<out>/.semmae.lock`` is held for the whole run. The operating
  system drops it when the process ends in any way (``kill -9`` included), so a stale lock cannot exist; a second
  process that wants the same folder is refused in one line naming the holder.
- **Hands off a live run.** A folder inside another process's live run folder is refused.
- **One run.** A fresh run into a folder that already holds files is refused unless the user says what to do with
  them: ``--resume`` (continue that run) or ``--overwrite`` (delete them and start again). Both act only on a
  folder this verb created, by its owner marker (:mod:`semmae.utils.ownership`): ``--overwrite`` deletes only the
  entries the marker lists and refuses a folder that holds anything else, or holds or lies inside an input of the
  command (its data, parts, checkpoint), so ``--out ~ --overwrite`` or a project folder with a ``config.yaml``
  cannot be wiped. A folder that holds another verb's run is refused either way; so is a continued run whose
  ``--data`` is not the run's.
- **Nothing written before the checks pass.** Claiming writes only the lock file (removed again when the claim
  is refused or the run never starts). The verb then checks what it
  must (its resume checkpoint, its data, its model) and calls :meth:`RunDir.start`, which is the first write:
  it deletes the old files (``--overwrite``), removes temporary files an interrupted write left behind
  (``.<name>.<random>.tmp``), drops log records past the step a resumed run continues from (so no step is logged
  twice), writes ``config.yaml`` and opens the :class:`RunLogger`.

Under torchrun only rank 0 claims and writes; a refusal on rank 0 is raised on every rank.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.utils import ownership
from semmae.utils.run_housekeeping import remove_orphaned_temporaries, truncate_log
from semmae.utils.run_lock import LOCK_NAME, acquire, locked_folder_above, locked_folder_below, read_holder
from semmae.utils.run_logger import RunLogger

#: the owner marker's kind for run folders
RUN_KIND = "run"
#: config fields a continued run may change: how it runs, not what it trains
OPERATIONAL_FIELDS = frozenset(
    "out resume overwrite device num_workers logger precision compile max_steps check_every ckpt_every keep_last "
    "log_every eval_every vis_every vis_images num_vis diag_images panel_images progress feature_cache_gb "
    "skip_bad_images".split()
)
#: input paths: checked by RunDir._check_same_data (a moved dataset may change its path)
PATH_FIELDS = frozenset("data train val eval_train eval_val parts train_parts val_parts".split())

#: the run directory this process holds, and the last one it claimed (the CLI's internal-error guard writes
#: its traceback there)
_current: RunDir | None = None
_last_claimed: Path | None = None


def last_run_dir() -> Path | None:
    """The run directory this process claimed last (held or already released), if any."""
    return _last_claimed


def forget_last_run_dir() -> None:
    """Start a new command: an earlier command's folder (in-process callers run several) is not this one's."""
    global _last_claimed
    _last_claimed = None


class RunDir:
    """Ownership of one run directory; create it with :func:`claim_run_dir`. A context manager (releases)."""

    def __init__(
        self,
        path: Path,
        verb: str,
        resume: bool,
        overwrite: bool,
        enabled: bool,
        inputs: dict[str, str | None] | None = None,
    ):
        self.path = path
        self.inputs = dict(inputs or {})
        self.verb = verb
        self.resume = resume
        self.overwrite = overwrite
        self.enabled = enabled
        self.previous: list[str] = []  # entries of the folder at claim time (lock file aside)
        self._fd: int | None = None
        self._outer: RunDir | None = None
        self._started = False
        self._created: list[Path] = []  # folders this claim created (removed again if the run never started)
        self._made_lock = False  # the lock file is this claim's (removed again if the run never started)
        self._old_record = b""  # the lock file's bytes before this claim (put back if the run never started)
        self.owner: ownership.Owner | None = None  # the folder's owner marker (written by start())
        self._adopt = False  # a run from before owner markers, continued: start() writes its marker

    # -- claiming -----------------------------------------------------------------------------------------
    def _claim(self, resume_hint: str) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise UserError(f"run directory {path} is a file; pass a folder to --out")
        live = live_lock_above(path.parent)
        if live is not None:
            raise UserError(
                f"run directory {path} lies inside {live}, the folder of a run that is still going; wait for it "
                "to end or use another --out"
            )
        missing = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {path}: {e.strerror or e}") from None
        self._created = missing  # innermost first
        self._made_lock = not (path / LOCK_NAME).exists()
        holder = self._lock()
        try:
            self.owner = ownership.read_owner(path)
        except ownership.MarkerError as e:
            raise UserError(f"run directory {path}: {e}") from None
        if self.owner is not None and not self.owner.describes(RUN_KIND, self.verb):
            what = "run" if self.owner.kind == RUN_KIND else self.owner.kind
            raise UserError(
                f"run directory {path} holds a `semmae {self.owner.verb}` {what}, not a `semmae {self.verb}` run; "
                "use another --out"
            )
        if self.owner is not None:
            self._adopt_killed_event_files()
            self._check_identities()
        # in a folder without a marker, a `.name.abcd1234.tmp` is not semmae's: it counts (the folder is not empty)
        self.previous = ownership.current_entries(path, temporaries=self.owner is None)
        if not self.previous:
            self._record_holder(None)
            return
        listing = _listing(self.previous)
        other_verb = holder.get("verb")
        if other_verb and other_verb != self.verb:
            raise UserError(
                f"run directory {path} holds a `semmae {other_verb}` run ({listing}), not a "
                f"`semmae {self.verb}` run; use another --out"
            )
        legacy = (
            self.owner is None and other_verb == self.verb
        )  # a run from before owner markers (its lock says)
        if self.overwrite:
            if self.owner is None:
                why = (
                    "was written by a semmae without owner markers, so nothing proves which files are the run's"
                    if legacy
                    else f"was not created by `semmae {self.verb}` (it has no {ownership.OWNER_NAME})"
                )
                raise UserError(
                    f"run directory {path} is not empty ({listing}) and {why}; --overwrite deletes only what "
                    "semmae wrote, so delete it yourself or choose a new or empty --out"
                )
            ownership.check_replace_folder(path, self.inputs)
            unrecorded = ownership.unrecorded_folders(path, self.owner)
            if unrecorded:
                raise UserError(
                    f"run directory {path} holds {_listing(unrecorded)}, a folder whose files an older semmae did "
                    "not record; --overwrite deletes only files semmae recorded, so delete the run yourself or "
                    "choose another --out"
                )
            below = locked_folder_below(path, held_folders())
            if below is not None:
                raise UserError(
                    f"run directory {path} holds {below}, the folder of a run that is still going; --overwrite "
                    "would delete its files: wait for it to end or choose another --out"
                )
            foreign = ownership.unlisted_entries(path, self.owner, deep=True)
            if foreign:
                copied = (
                    ""
                    if ownership.at_home(path, self.owner)
                    else " (or the folder was copied without its files' times: copy a run with `cp -a` or "
                    "`rsync -a`)"
                )
                raise UserError(
                    f"run directory {path} holds {_listing(foreign)}, which the run did not write{copied}"
                    f"{ownership.log_hint(path, foreign)}; --overwrite deletes only the run's own files, so move "
                    "them out first or choose another --out"
                )
        elif self.resume and self.owner is None and not legacy:
            raise UserError(
                f"run directory {path} is not empty ({listing}) and holds no `semmae {self.verb}` run "
                f"(no {ownership.OWNER_NAME}); choose a new or empty --out"
            )
        elif not self.resume:
            raise UserError(
                f"run directory {path} already holds a run ({listing}); pass {resume_hint} to continue it, "
                "--overwrite to delete it and start again, or another --out"
            )
        self._adopt = legacy and self.resume
        self._record_holder(other_verb)

    def _adopt_killed_event_files(self) -> None:
        """A run killed between TensorBoard creating its event file and the marker recording it: the marker
        recorded a random token before the writer opened, and the writer ended its file's name with it
        (:func:`semmae.utils.ownership.event_file_tokens`), so that file is the run's, and no other."""
        owner = self.owner
        if owner is None or owner.files is None or owner.ids is None:
            return
        for rel in ownership.event_file_tokens(self.path, owner):
            if rel in owner.ids:
                continue  # recorded by identity already (then checked like any other file)
            ident = ownership.identity(self.path / rel, appended=True)
            if ident is not None:
                owner.files = sorted({*owner.files, rel})
                ownership.record_identity(owner, rel, ident)

    def _check_identities(self) -> None:
        """What the marker records, checked against what the folder holds now (in memory; written at start()):
        a file recorded just before a write that a kill stopped, and a file that no longer matches the identity
        semmae recorded for it (a user's file put at that name), are not the run's; the run never deletes or
        replaces them, and ``--overwrite`` refuses the folder, naming them."""
        owner, path = self.owner, self.path
        assert owner is not None
        if owner.files is None or owner.ids is None:
            return  # format 1 or 2: recorded files are the run's, as that marker says (start() records them)

        # what this marker, or the marker of a run folder inside it that the run wrote into, knows as written by
        # semmae (a demo's stage continued by hand rewrote its config.yaml: its own marker knows the new one)
        known = ownership.recorded_paths(path, owner)

        def still_ours(rel: str) -> bool:
            return rel in owner.kept or not os.path.lexists(path / rel) or rel in known

        changed = [r for r in (*owner.entries, *owner.files) if not still_ours(r)]
        if changed and self.resume and not self.overwrite:
            copied = (
                ""
                if ownership.at_home(path, owner)
                else " (the folder was copied without its files' times: copy a "
                "run with `cp -a` or `rsync -a`)"
            )
            hint = ownership.log_hint(path, changed)
            way_out = (
                "a continued run would write over it: move it out of the run folder (or, if it is the run's, "
                "delete it) and run again"
            )
            raise UserError(
                f"run directory {path} holds {_listing(changed)}, which is not what the run wrote there (changed, "
                f"or put there since){copied}{hint if hint else '; ' + way_out}"
            )
        # a name recorded before a write that a kill stopped stays recorded (the run may write it yet), and so does
        # its identity once a file is gone (renamed back, it is the run's again): neither is ever taken for a file
        # put there later
        owner.files = [r for r in owner.files if still_ours(r)]
        owner.entries = [n for n in owner.entries if still_ours(n)]
        owner.ids = {r: v for r, v in owner.ids.items() if r in (*owner.entries, *owner.files)}

    def _record_present_identities(self) -> None:
        """A run continued from a marker written before identities (format 2), whose records are taken at their
        word, or from a copy of its folder (checked by size and time at the claim, the inodes being new): what
        each recorded file is now goes into the marker, which is format 3 of this folder from here on."""
        owner = self.owner
        assert owner is not None and owner.files is not None
        old = owner.ids or {}
        owner.ids = {}
        for rel in (*owner.entries, *owner.files):
            appended = any(k[3] > 0 for k in old.get(rel, ())) or rel in ("log.jsonl", "error.log")
            appended |= rel.startswith("tb/")
            ident = ownership.identity(self.path / rel, appended) if rel not in owner.kept else None
            if ident is not None:
                ownership.record_identity(owner, rel, ident)
        owner.home = ownership.folder_identity(self.path)
        owner.format = ownership.MARKER_FORMAT
        self._write_owner()

    def _lock(self) -> dict[str, Any]:
        """Take the exclusive lock; returns what the previous holder recorded (``{}`` if nothing)."""
        self._fd = acquire(self.path / LOCK_NAME, f"run directory {self.path}", "--out")
        self._old_record = os.pread(self._fd, 1 << 16, 0)  # put back if this claim never starts
        return read_holder(self._fd)

    def _record_holder(self, run_verb: str | None) -> None:
        """Record who holds the folder now (for a refused second writer) and whose run it holds (``run_verb``:
        recorded by :meth:`start` only, so a claim that is refused later does not mark a folder as its run)."""
        info = {"pid": os.getpid(), "host": socket.gethostname(), "holder": self.verb, "started": time.time()}
        if run_verb:
            info["verb"] = run_verb
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as e:
            raise UserError(f"cannot write {self.path / LOCK_NAME}: {e.strerror or e}") from None

    # -- the first writes ---------------------------------------------------------------------------------
    def start(
        self,
        config: Any | None = None,
        keep_log_until: int | None = None,
        tensorboard: bool = True,
        may_change: tuple[str, ...] = (),
    ) -> RunLogger:
        """Begin writing, after the verb's own checks passed; returns the run's :class:`RunLogger`.

        Args:
            config: the resolved config, written to ``config.yaml``.
            keep_log_until: a continued run passes the step (in its log's own unit) it resumes from: records past
                it are dropped from ``log.jsonl`` and TensorBoard so they are not logged twice; ``-1`` drops all.
                ``None`` keeps the log as it is (a fresh run's is empty anyway).
            tensorboard: also write TensorBoard events under ``tb/``.
            may_change: config fields besides :data:`OPERATIONAL_FIELDS` that a continued run may change (an epoch
                stage's ``epochs``: train on for more epochs).
        """
        if not self.enabled:
            return RunLogger(self.path, enabled=False)
        if self._fd is None:
            raise RuntimeError(f"run directory {self.path} was released before start()")
        if self.resume and config is not None:
            self._check_same_data(config)
            if keep_log_until is not None:  # continued (or evaluated again, -1) in the same folder
                self._check_same_meaning(config, may_change)
        self._started = True
        left: ownership.Owner | None = None
        if self.overwrite and self.previous:
            assert self.owner is not None  # _claim refused an unowned folder
            removed = ownership.delete_owned(self.path, self.owner)
            left = self.owner  # what it keeps listed: a tracker's store
            if removed:
                print(
                    f"semmae {self.verb}: --overwrite: deleted the previous run in {self.path} "
                    f"({_listing(removed)})",
                    flush=True,
                )
            keep_log_until = None
            self.owner = None
        note_written(self.path)  # a run folder this process holds around it records this one (a demo's stage)
        if self.owner is None:  # the first write: the folder is this run's from here on
            self.owner = ownership.Owner(kind=RUN_KIND, verb=self.verb, ids={})
            self.owner.home = ownership.folder_identity(self.path)
            if self._adopt:  # a run from before owner markers: which files are its own is not known
                self.owner.entries, self.owner.files, self.owner.ids = list(self.previous), None, None
            elif left is not None:
                self.owner.entries, self.owner.kept = list(left.entries), list(left.kept)
                self.owner.files = list(left.files or ())
                self.owner.ids = dict(left.ids) if left.ids is not None else {}
            ownership.write_owner(self.path, self.owner)
        elif self.owner.files is not None and (
            self.owner.ids is None or not ownership.at_home(self.path, self.owner)
        ):
            self._record_present_identities()
        # the lock names the run's verb only once the marker is written: a folder whose lock names a verb and has
        # no marker is one from before markers, never a run killed before its marker (whose files are unknown)
        self._record_holder(self.verb)
        orphans = remove_orphaned_temporaries(self.path, written_for=self.records)
        if orphans:
            print(
                f"semmae {self.verb}: removed {len(orphans)} temporary file(s) an interrupted write left in "
                f"{self.path}",
                flush=True,
            )
        if keep_log_until is not None:
            truncate_log(self.path / "log.jsonl", keep_log_until)
        purge = keep_log_until + 1 if keep_log_until is not None else None
        self.note(*RunLogger.entries(config, tensorboard))  # listed before the logger writes them
        self.keep(*RunLogger.kept_entries(config, tensorboard))
        return RunLogger(self.path, config, enabled=True, tensorboard=tensorboard, purge_step=purge)

    def note(self, *names: str) -> None:
        """Record what this run writes (or is about to write) in its owner marker, by paths relative to the run
        folder (``config.yaml``, ``checkpoints/ckpt-000100.pth``): what ``--overwrite`` may delete later. Only
        what semmae writes is noted, never what it finds: a file a user puts into the folder or into one of its
        subfolders (before a continued run, or while the run is going) stays the user's, and ``--overwrite`` then
        refuses the folder, naming it. Atomic writes note themselves (:func:`note_written`); the run's logger and
        trackers are noted at :meth:`start`; a writer that fills a folder file by file notes each file before it
        writes it. A run folder held inside this one (a demo's stage) notes into both markers."""
        note_written(*(self.path / n for n in names))

    def keep(self, *names: str) -> None:
        """Note top-level entries a tracker library writes on its own (``wandb/``, ``mlflow.db``): never deleted,
        not even by ``--overwrite`` (:class:`semmae.utils.ownership.Owner`)."""
        if not names or not (self._started and self.owner is not None and self._fd is not None):
            return
        self.note(*names)
        new = sorted(set(names) - set(self.owner.kept))
        if new:
            self.owner.kept = sorted(set(self.owner.kept) | set(new))
            self._write_owner()

    def _record(self, rels: list[tuple[str, ...]]) -> None:
        if not (self._started and self.owner is not None and self._fd is not None):
            return
        entries, files = set(self.owner.entries), set(self.owner.files or ())
        for parts in rels:
            if not parts or not ownership.markable([parts[0]]) or any(p in ("", ".", "..") for p in parts):
                continue
            entries.add(parts[0])
            if len(parts) > 1 and self.owner.files is not None and ownership.markable([parts[-1]]):
                files.add("/".join(parts))
        if entries == set(self.owner.entries) and files == set(self.owner.files or ()):
            return
        self.owner.entries = sorted(entries)
        if self.owner.files is not None:
            self.owner.files = sorted(files)
        self._write_owner()

    def _record_event_token(self, rec: str) -> None:
        if self._started and self.owner is not None and self._fd is not None and rec not in self.owner.events:
            self.owner.events = sorted({*self.owner.events, rec})
            self._write_owner()

    def _record_identities(self, found: list[tuple[str, list]], appended_in: Path | None = None) -> None:
        """Record each ``(rel, identity)`` of a file the marker records (``appended_in``: the folder, when the
        files are appended to: one whose recorded identity still matches is left as it is)."""
        owner = self.owner
        if not (self._started and owner is not None and self._fd is not None and owner.ids is not None):
            return
        recorded = {*owner.entries, *(owner.files or ())}
        changed = False
        for rel, ident in found:
            if rel not in recorded:
                continue
            if appended_in is not None and ownership.matches(
                appended_in / rel, owner.ids.get(rel, ()), ownership.at_home(appended_in, owner)
            ):
                continue
            changed |= ownership.record_identity(owner, rel, ident)
        if changed:
            self._write_owner()

    def records(self, rel: str) -> bool:
        """Whether this run's marker records the path ``rel`` (relative to the run folder) as written by semmae: a
        listed top-level entry, a recorded file below one, the folder's own marker; below a folder a format-1
        marker listed, anything (what it wrote there was never recorded). A recorded file that no longer matches
        its recorded identity (a user's file put in its place) is not the run's."""
        if self.owner is None:
            return False
        parts = rel.split("/")
        if parts[0] in ownership.BOOKKEEPING_NAMES and len(parts) == 1:
            return True
        if len(parts) == 1:
            listed = rel in self.owner.entries
        elif self.owner.files is None:
            return parts[0] in self.owner.entries
        else:
            listed = rel in self.owner.files
        if not listed or rel in self.owner.kept or not os.path.lexists(self.path / rel):
            return listed  # a name recorded before its write: the write that follows is the run's
        return ownership.trusted(self.path, self.owner, rel)

    def forget(self, rels: list[str]) -> None:
        """Drop recorded files the run itself deleted or renamed (an older checkpoint past ``keep_last``): a file a
        user later puts there under that name is theirs."""
        if not (self._started and self.owner is not None and self.owner.files is not None):
            return
        gone = set(rels) & set(self.owner.files)
        if gone:
            self.owner.files = [r for r in self.owner.files if r not in gone]
            if self.owner.ids is not None:
                self.owner.ids = {r: v for r, v in self.owner.ids.items() if r not in gone}
            self._write_owner()

    def _write_owner(self) -> None:
        assert self.owner is not None
        try:
            ownership.write_owner(self.path, self.owner)
        except UserError:
            pass  # a full disk: the write that follows names it

    def _check_same_data(self, config: Any) -> None:
        """A continued run reads the data the run read: another ``--data`` is refused, naming both. Only a path
        that no longer exists may change (a dataset copied to a node's local disk per job), with a note."""
        import yaml

        try:
            old = yaml.safe_load((self.path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return
        if not isinstance(old, dict):
            return
        for key in sorted(PATH_FIELDS):
            new, was = getattr(config, key, None), old.get(key)
            if not new or not was or new == was or os.path.realpath(new) == os.path.realpath(was):
                continue
            flag = "--" + key
            if not os.path.exists(was):
                print(
                    f"semmae {self.verb}: note: {flag} {new} replaces {was}, which no longer exists",
                    flush=True,
                )
                continue
            raise UserError(
                f"{flag} {new} is not {was}, the {flag} of the run in {self.path}; continue it with the same "
                f"{flag}, or start a new run (--overwrite or another --out)"
            )

    def _check_same_meaning(self, config: Any, may_change: tuple[str, ...] = ()) -> None:
        """A continued run is the same run: a changed setting that alters what it trains (``--masking``,
        ``--gamma``, ``--epochs``, the model, ...) is refused, naming each, before anything is written. Settings
        of how it runs (:data:`OPERATIONAL_FIELDS`: device, workers, logging, checkpoint cadence) may change; the
        input paths are :meth:`_check_same_data`'s."""
        import yaml

        from semmae.utils.plain_config import config_to_dict

        try:
            old = yaml.safe_load((self.path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return
        if not isinstance(old, dict):
            return
        new = config_to_dict(config) if not isinstance(config, dict) else dict(config)
        new = yaml.safe_load(yaml.safe_dump(new))  # the same plain types config.yaml holds (tuples as lists)
        defaults = _field_defaults(config)
        changed = [
            k
            for k in sorted(set(old) | set(new))
            if k not in OPERATIONAL_FIELDS
            and k not in PATH_FIELDS
            and k not in may_change
            and old.get(k) != new.get(k)
            # a field added after the run began, left at its default, is what the run did
            and not (k not in old and k in defaults and new.get(k) == defaults[k])
        ]
        if changed:
            shown = ", ".join(
                f"--{k.replace('_', '-')} {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4]
            )
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise UserError(
                f"the run in {self.path} was started with other settings ({shown}{more}); a continued run must "
                "keep them: continue with the run's settings, or start a new run (--overwrite or another --out)"
            )

    # -- releasing ----------------------------------------------------------------------------------------
    def release(self) -> None:
        """Drop the lock (the OS does it too when the process ends). Idempotent."""
        global _current
        if self._fd is not None:
            if not self._started and (self._created or self._made_lock):  # refused before writing: no trace
                try:
                    # while still held: a waiting process notices and retries
                    (self.path / LOCK_NAME).unlink()
                    for folder in self._created:
                        folder.rmdir()
                except OSError:
                    pass
            elif not self._started:  # the lock file a finished run left: its record as it was
                try:
                    if os.pread(self._fd, 1 << 16, 0) != self._old_record:
                        os.ftruncate(self._fd, 0)
                        os.pwrite(self._fd, self._old_record, 0)
                except OSError:
                    pass
            os.close(self._fd)
            self._fd = None
        if _current is self:
            _current = self._outer

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: Any = None, exc: BaseException | None = None, tb: Any = None) -> None:
        if exc is not None and self.enabled and not hasattr(exc, "semmae_run_dir"):
            try:  # where the CLI's internal-error guard writes the traceback (the innermost run wins)
                exc.semmae_run_dir = self.path  # type: ignore[attr-defined]
            except AttributeError:
                pass
        self.release()


def claim_run_dir(
    out: str | Path,
    verb: str,
    *,
    resume: bool,
    overwrite: bool,
    enabled: bool = True,
    resume_hint: str = "--resume auto",
    inputs: dict[str, str | None] | None = None,
) -> RunDir:
    """Take ownership of run directory ``out`` for ``semmae <verb>`` (see the module docstring).

    Args:
        out: the run folder (created if missing).
        verb: the command, as the user types it after ``semmae`` (``"pretrain"``, ``"parts train"``).
        resume: the user asked to continue a run in ``out`` (refusals of a fresh run into a full folder need it).
        overwrite: the user asked to delete what ``out`` holds and start again (done by :meth:`RunDir.start`).
        enabled: ``False`` on non-main ranks: nothing is locked or written there.
        resume_hint: how this verb's user asks to continue (``"--resume auto"`` for pretrain).
        inputs: what the command reads, by flag (``{"--data": path}``): ``--overwrite`` never deletes a folder that
            is, holds or lies inside one of them.

    Raises:
        UserError: the folder is in use, holds a run the flags do not account for, or cannot be written.
    """
    global _current, _last_claimed
    from semmae.utils import distributed as du

    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite deletes it: pass one of them")
    run = RunDir(Path(out), verb, resume, overwrite, enabled, inputs)
    error = None
    if enabled:
        try:
            run._claim(resume_hint)
        except UserError as e:
            run.release()
            error = str(e)
    error = du.broadcast_object(error) if du.is_dist() else error
    if error is not None:
        run.release()
        raise UserError(error)
    if enabled:
        run._outer, _current = _current, run
        _last_claimed = run.path
    return run


def _field_defaults(config: Any) -> dict[str, Any]:
    """A dataclass config's field defaults as plain YAML values (``{}`` for anything else)."""
    import dataclasses

    import yaml

    if not dataclasses.is_dataclass(config):
        return {}
    found = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            value = list(f.default) if isinstance(f.default, tuple) else f.default
            found[f.name] = yaml.safe_load(yaml.safe_dump(value))
    return found


def _held_runs_around(paths: tuple[str | Path, ...]):
    """Each run folder this process holds, innermost first, with the ``paths`` that lie inside it (relative to it;
    the folder itself left out)."""
    run = _current
    while run is not None:
        root = os.path.abspath(run.path)
        rels = []
        for path in paths:
            try:
                rel = Path(os.path.abspath(path)).relative_to(root)
            except ValueError:
                continue
            if rel.parts:
                rels.append(rel)
        yield run, rels
        run = run._outer


def note_written(*paths: str | Path) -> None:
    """semmae wrote (or is about to write) ``paths``: an atomic write (:mod:`semmae.utils.io`), each file a writer
    saves one by one, a tracker's event file. For each run folder this process holds that a path lies in (a demo's
    and the stage run inside it), the path relative to that folder goes into its owner marker (one marker write
    per folder)."""
    for run, rels in _held_runs_around(paths):
        if rels:
            run._record([rel.parts for rel in rels])


def note_event_token(folder: str | Path, token: str) -> None:
    """A TensorBoard writer is about to open in ``folder`` and end its event file's name with ``.<token>``: each
    run folder this process holds around ``folder`` records that first, so the file is known as the run's even if
    a kill comes before its name is recorded."""
    for run, rels in _held_runs_around((folder,)):
        if rels:
            run._record_event_token(f"{rels[0].as_posix()}/{token}")


def note_identity(found: list[tuple[Path, list]], appended: bool = False) -> None:
    """semmae wrote each file ``path`` of ``found`` (recorded already by :func:`note_written`) and it is ``ident``
    (:func:`semmae.utils.ownership.identity`): each run folder this process holds around it records that, with
    one marker write (``appended``: unless an identity it recorded still matches the file)."""
    idents = {os.path.abspath(path): ident for path, ident in found}
    for run, rels in _held_runs_around(tuple(path for path, _ in found)):
        if rels:
            run._record_identities(
                [(rel.as_posix(), idents[os.path.abspath(run.path / rel)]) for rel in rels],
                run.path if appended else None,
            )


def _innermost_run(path: str | Path) -> tuple[RunDir, str] | None:
    """The innermost started run folder this process holds around ``path``, and ``path`` relative to it."""
    for run, rels in _held_runs_around((path,)):
        if rels and run._started and run.owner is not None and run._fd is not None:
            return run, rels[0].as_posix()
    return None


def recorded_by_its_run(path: str | Path) -> bool | None:
    """Whether the innermost run folder this process holds around ``path`` records it as a file the run wrote:
    what a run may delete of its own accord (older checkpoints past ``keep_last``). ``None`` where that cannot be
    told: no run folder held there, or a marker from before files were recorded."""
    found = _innermost_run(path)
    if found is None:
        return None
    run, rel = found
    if "/" in rel and run.owner is not None and run.owner.files is None:
        return None
    return run.records(rel)


def check_may_replace(path: str | Path) -> None:
    """Refuse (one line) to replace a file inside a held run folder that the run does not record: a user's file
    put there under a name the run writes (a copy named ``checkpoints/ckpt-000000004.pth``, before a continued run
    reaches step 4). A path below a folder a format-1 marker lists is let through (nothing was recorded there)."""
    if not os.path.lexists(path):
        return
    found = _innermost_run(path)
    if found is None:
        return
    run, rel = found
    if not run.records(rel):
        why = (
            f"is not the file the run in {run.path} wrote there (changed, or put there since)"
            if run.owner is not None and rel in (*run.owner.entries, *(run.owner.files or ()))
            else f"the run in {run.path} did not write it"
        )
        raise UserError(
            f"{path} exists and {why}; semmae never replaces a file of yours: move it out of the run folder and "
            "run again"
        )


def check_may_append(path: str | Path) -> None:
    """Refuse (one line) to append to ``path`` unless the innermost run folder held around it records it and it
    still matches its recorded identity (by inode and first bytes: no read of the whole file)."""
    found = _innermost_run(path)
    if found is None:
        return
    run, rel = found
    owner = run.owner
    if owner is None or owner.ids is None or not os.path.lexists(path):
        return
    if not ownership.matches(path, owner.ids.get(rel, ()), ownership.at_home(run.path, owner)):
        raise UserError(
            f"{path} is not the file the run in {run.path} wrote there (changed, or put there since); semmae never "
            "writes into a file of yours: move it out of the run folder and run again"
        )


def forget_written(*paths: str | Path) -> None:
    """semmae deleted or renamed ``paths`` itself: each held run folder they lie in stops recording them."""
    for run, rels in _held_runs_around(paths):
        below = [rel.as_posix() for rel in rels if len(rel.parts) > 1]
        if below:
            run.forget(below)


def held_folders() -> set[Path]:
    """The run folders this process holds now (resolved)."""
    ours = set()
    run = _current
    while run is not None:
        ours.add(run.path.resolve())
        run = run._outer
    return ours


def live_lock_above(path: str | Path) -> Path | None:
    """The nearest of ``path`` and its parents whose run lock (``.semmae.lock``) another process holds now, if any:
    a folder a destructive option must leave alone. Folders this process holds do not count."""
    return locked_folder_above(path, held_folders())


def check_out_outside(out: str | Path, inputs: dict[str, str | None]) -> None:
    """Refuse an ``--out`` that lies inside (or is) a folder the verb reads (``{"--data": path}``): its files
    would become part of the data (a class of an ImageFolder, a file of a pack)."""
    where = Path(out).resolve()
    for flag, folder in inputs.items():
        if not folder:
            continue
        root = Path(folder).resolve()
        if where == root or root in where.parents:
            raise UserError(
                f"--out {out} lies inside {flag} {folder}: what it writes would become part of the data; "
                "choose an --out outside it"
            )


def _listing(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
