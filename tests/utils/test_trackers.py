"""``--logger``: the run logger hands the same scalars, config and figures to each tracker asked for; W&B and
MLflow are tested in their offline modes when installed; a tracker that is not installed is one error line."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from _helpers import one_error_line, write_image_folder

from semmae.cli import main
from semmae.errors import UserError
from semmae.utils import trackers
from semmae.utils.run_logger import RunLogger, read_log


@dataclass
class Config:
    lr: float = 0.1
    model: str = "mae_vit_micro_patch8"
    logger: str = "tensorboard"


PANEL = torch.zeros(3, 8, 8, dtype=torch.uint8)


def log_a_run(out, logger: str) -> None:
    run = RunLogger(out, Config(logger=logger))
    for step in (1, 2, 3):
        run.log(step, loss=1.0 / step, epoch=1, note="text is not a scalar")
    run.add_image("reconstruction", PANEL, 3)
    run.close()


def test_none_writes_the_log_alone_and_tensorboard_is_the_default(tmp_path):
    log_a_run(tmp_path / "none", "none")
    assert [r["loss"] for r in read_log(tmp_path / "none" / "log.jsonl")] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert not (tmp_path / "none" / "tb").exists()
    log_a_run(tmp_path / "tb", "tensorboard")
    assert list((tmp_path / "tb" / "tb").iterdir())


def test_unknown_or_missing_trackers_are_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match="unknown tracker neptune"):
        trackers.parse_trackers("tensorboard,neptune")
    monkeypatch.setattr(trackers, "installed", lambda package: package != "wandb")
    images = write_image_folder(tmp_path / "imgs", per_class=2, size=32)
    argv = [
        "pretrain",
        "--data",
        str(images),
        "--out",
        str(tmp_path / "run"),
        "--model",
        "mae_vit_micro_patch8",
    ]
    argv += ["--img-size", "32", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2"]
    argv += [
        "--precision",
        "fp32",
        "--no-progress",
        "--num-workers",
        "0",
        "--vis-every",
        "0",
        "--masking",
        "random",
    ]
    capsys.readouterr()
    assert main([*argv, "--logger", "tensorboard,wandb"]) == 2
    one_error_line(capsys, "--logger wandb: the wandb package is not installed", "semmae[wandb]")
    assert main([*argv, "--logger", "none"]) == 0
    assert not (tmp_path / "run" / "tb").exists() and read_log(tmp_path / "run" / "log.jsonl")


def test_wandb_offline_gets_the_scalars_config_and_figures(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = RunLogger(tmp_path / "run", Config(logger="tensorboard,wandb"))
    run = logger._trackers[1].run
    sent, log = [], run.log
    monkeypatch.setattr(
        run, "log", lambda data, step: (sent.append((step, sorted(data))), log(data, step=step))
    )
    for step in (1, 2, 3):
        logger.log(step, loss=1.0 / step, epoch=1, note="text is not a scalar")
    logger.add_image("reconstruction", PANEL, 3)
    assert sent == [
        (1, ["epoch", "loss"]),
        (2, ["epoch", "loss"]),
        (3, ["epoch", "loss"]),
        (3, ["reconstruction"]),
    ]
    assert run.summary["loss"] == pytest.approx(1 / 2)  # W&B commits a step's row when the next step comes
    assert run.config["model"] == "mae_vit_micro_patch8" and run.config["lr"] == 0.1
    logger.close()
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list((run_dir / "files" / "media" / "images").glob("reconstruction_3_*.png"))  # the figure


def test_mlflow_local_store_gets_the_scalars_config_and_figures(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    log_a_run(out, "mlflow")
    client = MlflowClient(tracking_uri=trackers.mlflow_store(out)[0])
    run = client.get_run((out / "mlflow-run-id").read_text().strip())
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert run.data.params["model"] == "mae_vit_micro_patch8" and run.data.params["lr"] == "0.1"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "reconstruction"} <= names


def test_mlflow_with_a_users_file_or_database_uri_is_one_line_or_works(tmp_path, monkeypatch):
    """Issue 37: `--logger mlflow` with a `file:` or `sqlite:` MLFLOW_TRACKING_URI was an internal error."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out = tmp_path / "run"
    log_a_run(out, "mlflow")
    run_id = (out / "mlflow-run-id").read_text().strip()
    assert [m.step for m in MlflowClient(tracking_uri=store).get_metric_history(run_id, "loss")] == [1, 2, 3]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    if trackers.installed("sqlalchemy") and trackers.installed("alembic"):
        log_a_run(tmp_path / "run2", "mlflow")
    else:
        with pytest.raises(UserError, match="is a database store, which needs SQLAlchemy"):
            log_a_run(tmp_path / "run2", "mlflow")


def test_tensorboard_writes_into_a_folder_whose_path_is_not_utf8(tmp_path):
    """Issue 37: a run folder whose name is not UTF-8 crashed TensorBoard's writer (it encodes the path)."""
    import os

    out = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    logger = RunLogger(out, None, enabled=True, tensorboard=True)
    logger.log(1, loss=0.5)
    logger.close()
    events = os.listdir(os.fsencode(out) + b"/tb")
    assert len(events) == 1 and events[0].startswith(b"events.out.tfevents")
    assert read_log(os.path.join(out, "log.jsonl"))[0]["loss"] == 0.5
