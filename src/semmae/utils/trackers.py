"""Experiment trackers behind :class:`semmae.utils.run_logger.RunLogger` (``--logger tensorboard,wandb,mlflow`` on the
training verbs). Each one receives the same things: every numeric value the run logs (the scalars of
``log.jsonl``, at the same step), the resolved config once, and the figures (reconstruction / part panels).

``log.jsonl`` is always written; TensorBoard is the default tracker. Weights & Biases and MLflow are optional
(``pip install 'semmae[wandb]'`` / ``'semmae[mlflow]'``): asking for one that is not installed is one
:class:`UserError` line. Their own settings come from their own environment variables: ``WANDB_MODE=offline``
(runs under ``<out>/wandb``), ``WANDB_PROJECT`` (default ``semmae``); ``MLFLOW_TRACKING_URI`` (default: a
store in the run folder, :func:`mlflow_store`), ``MLFLOW_EXPERIMENT_NAME`` (default ``semmae``).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import time
from pathlib import Path
from typing import Any

from semmae.errors import UserError
from semmae.utils.io import atomic_write_text

TRACKERS = ("tensorboard", "wandb", "mlflow")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_DEFAULT_PROJECT = "semmae"


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def parse_trackers(spec: str | None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` -> ``("tensorboard", "wandb")``; ``"none"`` or empty -> ``()``; each one installed."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in (spec or "").split(",") if n.strip()))
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(
            f"--logger {spec}: unknown tracker {', '.join(unknown)}; choose from {', '.join(TRACKERS)}, none"
        )
    for name in names:
        if not installed(_PACKAGES[name]):
            raise UserError(
                f"--logger {name}: the {_PACKAGES[name]} package is not installed; pip install "
                f"'semmae[{name}]' or drop {name} from --logger"
            )
    return names


def _hwc_uint8(image_chw: Any) -> Any:
    """A figure [C, H, W] (uint8, or float in [0, 1]) as a uint8 numpy array [H, W, C]."""
    import numpy as np

    arr = image_chw.detach().cpu().numpy() if hasattr(image_chw, "detach") else np.asarray(image_chw)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


class TensorBoardTracker:
    #: what it writes in the run folder (the folder's owner marker lists them: :mod:`semmae.utils.rundir`)
    ENTRIES = ("tb",)
    #: none of them is kept by --overwrite: each event file is recorded by name (its writer names it at creation,
    #: ending it with a token the marker records first)
    KEPT: tuple[str, ...] = ()

    def __init__(self, out_dir: Path, config: dict[str, Any] | None, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        from semmae.utils.io import note_event_token
        from semmae.utils.ownership import new_event_token

        self._dir_fd: int | None = None
        token = new_event_token()
        note_event_token(out_dir / "tb", token)  # before the writer names its file with it
        try:
            self.writer = SummaryWriter(
                log_dir=self._log_dir(out_dir / "tb"), purge_step=purge_step, filename_suffix=f".{token}"
            )
        except OSError as e:
            raise UserError(f"cannot write {out_dir / 'tb'}: {e.strerror or e}") from None
        self._note_event_file(out_dir / "tb")
        if config and purge_step is None:
            import yaml

            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "\n```", 0)

    def _note_event_file(self, tb: Path) -> None:
        """Record the event file the writer just created in the run folder's owner marker, by its name (the run
        folder then deletes exactly it on ``--overwrite``, never a user's file beside it in ``tb/``)."""
        from semmae.utils.io import note_identity, note_written

        name = getattr(
            getattr(getattr(self.writer, "file_writer", None), "event_writer", None), "_file_name", None
        )
        if isinstance(name, str) and name:
            note_written(tb / os.path.basename(name))
            # its first event (the file version, stamped with the time) is on disk already: what identifies it
            note_identity(tb / os.path.basename(name), appended=True)

    def _log_dir(self, tb: Path) -> str:
        """The folder as TensorBoard's writer can open it: its path, or (a path that is not UTF-8, which the writer
        cannot encode) the folder held open and named through ``/proc/self/fd``."""
        try:
            str(tb).encode("utf-8")
            return str(tb)
        except UnicodeEncodeError:
            pass
        tb.mkdir(parents=True, exist_ok=True)
        if not Path("/proc/self/fd").is_dir():
            raise UserError(
                f"TensorBoard cannot write into {tb!r}: its path is not UTF-8; rename the folder or pass --logger none"
            )
        self._dir_fd = os.open(tb, os.O_RDONLY)
        return f"/proc/self/fd/{self._dir_fd}"

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def image(self, tag: str, image_chw: Any, step: int) -> None:
        self.writer.add_image(tag, image_chw, step)

    def close(self) -> None:
        self.writer.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def _read_id(path: Path) -> str:
    """A tracker run id kept in the run folder (``""`` when there is none, or the name is a link: never read
    through one)."""
    if path.is_symlink() or not path.is_file():
        return ""
    return path.read_text(errors="replace").strip()


class WandbTracker:
    """One W&B run per run folder: its id is kept in ``<out>/wandb-run-id`` so a resumed run continues it."""

    ENTRIES = ("wandb", "wandb-run-id")
    #: W&B's local store, written by its own process: never deleted (a new run id is a new W&B run beside it)
    KEPT = ("wandb",)

    def __init__(self, out_dir: Path, config: dict[str, Any] | None, purge_step: int | None):
        import wandb

        id_file = out_dir / "wandb-run-id"
        run_id = _read_id(id_file) or secrets.token_hex(4)
        atomic_write_text(id_file, run_id + "\n")  # replaces a link there, never writes through it
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", _DEFAULT_PROJECT),
            name=out_dir.name,
            dir=str(out_dir),
            id=run_id,
            resume="allow",
            config=config or {},
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def image(self, tag: str, image_chw: Any, step: int) -> None:
        self.run.log({tag: self.wandb.Image(_hwc_uint8(image_chw))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """One MLflow run per run folder (its id kept in ``<out>/mlflow-run-id``); the config as flattened params."""

    ENTRIES = ("mlflow-run-id", "mlflow.db", "mlartifacts", "mlruns")
    #: MLflow's store: never deleted (a new run id is a new MLflow run in it, so its history stays)
    KEPT = ("mlflow.db", "mlartifacts", "mlruns")

    def __init__(self, out_dir: Path, config: dict[str, Any] | None, purge_step: int | None):
        from mlflow.exceptions import MlflowException

        try:
            self._start(out_dir, config)
        except MlflowException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--logger mlflow: MLflow refused its store ({first[:300]})") from None

    def _start(self, out_dir: Path, config: dict[str, Any] | None) -> None:
        from mlflow.tracking import MlflowClient

        uri, artifacts = mlflow_store(out_dir)
        self.client = client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", _DEFAULT_PROJECT)
        experiment = client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(name, artifact_location=artifacts)
        )
        id_file = out_dir / "mlflow-run-id"
        if _read_id(id_file):
            self.run_id = _read_id(id_file)
        else:
            self.run_id = client.create_run(experiment_id, run_name=out_dir.name).info.run_id
            atomic_write_text(id_file, self.run_id + "\n")
            if config:
                from mlflow.entities import Param

                params = [Param(k, str(v)[:500]) for k, v in _flatten(config).items()]
                for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                    client.log_batch(self.run_id, params=params[i : i + 100])
                client.log_dict(self.run_id, config, "config.json")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()]
        )

    def image(self, tag: str, image_chw: Any, step: int) -> None:
        self.client.log_image(self.run_id, _hwc_uint8(image_chw), artifact_file=f"{tag}/step_{step:09d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def mlflow_store(out_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location of a new experiment): ``MLFLOW_TRACKING_URI`` when set (the server's
    artifact store), else a store inside the run folder - ``<out>/mlflow.db`` (SQLite, MLflow's default backend
    since 3.x) with ``<out>/mlartifacts``, or, without SQLAlchemy (``mlflow-skinny``), the file store
    ``<out>/mlruns``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        scheme = uri.split(":", 1)[0].lower() if ":" in uri else "file"
        if scheme in ("sqlite", "postgresql", "mysql", "mssql") and not (
            installed("sqlalchemy") and installed("alembic")
        ):
            raise UserError(
                f"MLFLOW_TRACKING_URI={uri} is a database store, which needs SQLAlchemy and alembic: "
                "pip install 'semmae[mlflow]' (full mlflow, not mlflow-skinny), or use a file: or http(s): URI"
            )
        if scheme == "file":
            os.environ.setdefault(
                "MLFLOW_ALLOW_FILE_STORE", "true"
            )  # the user chose a file store: MLflow 3's opt-in
        return uri, None
    out_dir = out_dir.resolve()
    if installed("sqlalchemy") and installed("alembic"):
        return f"sqlite:///{out_dir / 'mlflow.db'}", (out_dir / "mlartifacts").as_uri()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in for a file store
    return (out_dir / "mlruns").as_uri(), None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def tracker_entries(names: tuple[str, ...]) -> list[str]:
    """The top-level names the trackers ``names`` write in a run folder."""
    return [entry for name in names for entry in _CLASSES[name].ENTRIES]


def tracker_kept(names: tuple[str, ...]) -> list[str]:
    """Of :func:`tracker_entries`, the stores the tracker libraries write on their own, which semmae never deletes
    (:class:`semmae.utils.ownership.Owner`'s ``kept``)."""
    return [entry for name in names for entry in _CLASSES[name].KEPT]


def open_trackers(
    names: tuple[str, ...], out_dir: Path, config: dict[str, Any] | None, purge_step: int | None
) -> list[Any]:
    """Start the trackers ``names`` (from :func:`parse_trackers`) for the run folder ``out_dir``."""
    return [_CLASSES[name](out_dir, config, purge_step) for name in names]
