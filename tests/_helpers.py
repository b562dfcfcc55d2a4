"""Helpers shared by tests (importable as ``_helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image


def write_image_folder(root, classes=("a", "b"), per_class=3, size=32, seed=0, ext="png", stem="img"):
    """Write a tiny ImageFolder tree of random RGB images (``<class>/<stem><i>.<ext>``); returns the root."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{stem}{i}.{ext}")
    return root


def subprocess_env() -> dict[str, str]:
    """Environment of a CLI subprocess: one compute thread (float sums in a fixed order), unbuffered output."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def logged_losses(out) -> dict[int, float]:
    """The loss a run logged at each step (``out/log.jsonl``)."""
    from semmae.utils.run_logger import read_log

    return {r["step"]: r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r}


def run_torchrun(argv: list[str], nproc: int = 2, timeout: int = 240):
    """``torchrun --standalone --nproc-per-node N -m semmae.cli ARGV`` on gloo; returns the CompletedProcess."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "semmae.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


KILLER = """
import os, signal, sys
from semmae.utils import run_logger
_log = run_logger.RunLogger.log
def log(self, step, **kw):
    _log(self, step, **kw)
    if step == {kill_at}:
        os.{kill}(os.{who}(), signal.{signal})
run_logger.RunLogger.log = log
from semmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_killed_at(
    step: int, argv: list[str], timeout: int = 240, signal: str = "SIGKILL", group: bool = False
):
    """``semmae ARGV`` in a subprocess that sends itself ``signal`` right after logging ``step`` (``group``: to
    its whole process group, DataLoader workers included, as a scheduler does); the CompletedProcess."""
    import subprocess
    import sys

    kill, who = ("killpg", "getpgrp") if group else ("kill", "getpid")
    code = KILLER.format(kill_at=step, signal=signal, kill=kill, who=who)
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        start_new_session=group,
    )


TQDM_BAR = re.compile(r"\d+/\d+ \[\d\d:\d\d<")  # a tqdm progress line (it/s or s/it)


def one_error_line(capsys, *needles):
    """The captured stderr, tqdm bars aside, is exactly one line holding every needle; returns it."""
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = "\n".join(line for line in lines if line.strip() and not TQDM_BAR.search(line))
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def pretrain_checkpoint(path, mae, **config) -> dict:
    """A checkpoint in `semmae pretrain`'s layout (every key a resume needs)."""
    ckpt = {
        "model": mae.state_dict(),
        "model_config": mae.config_dict(),
        "optimizer": {},
        "scaler": {},
        "epoch": 1,
        "step": 4,
        "config": dict(config),
        "rng": {},
        "sampler": {},
    }
    torch.save(ckpt, path)
    return ckpt


def run_torchrun_code(code: str, argv: list[str] = (), nproc: int = 2, timeout: int = 240):
    """``torchrun --standalone --nproc-per-node N python -c CODE ARGV`` on gloo; returns the CompletedProcess."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    cmd += ["--nproc-per-node", str(nproc), "--no-python", sys.executable, "-c", code, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


def folder_snapshot(root) -> dict[str, object]:
    """Everything under ``root``: ``{relative path: (bytes, mtime_ns)}`` per file and ``"dir"`` per folder; of a
    run lock its bytes only (a refused claim puts back the record it wrote there)."""
    from semmae.utils.run_lock import LOCK_NAME

    snap: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            snap[rel] = "dir"
        elif p.name == LOCK_NAME:
            snap[rel] = p.read_bytes()
        else:
            snap[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return snap


def user_folder(root):
    """A folder of a user's own things (a file and a sub-folder); returns it."""
    (root / "photos").mkdir(parents=True)
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a cat")
    (root / "thesis.txt").write_text("four years of work\n")
    (root / "files.txt").write_text("my list\n")
    return root


class live_run:
    """A context manager: ``root`` holds a `semmae <verb>` run whose lock is held (as by a running process)."""

    def __init__(self, root, verb: str = "pretrain"):
        self.root, self.verb = root, verb

    def __enter__(self):
        import fcntl
        import json
        import os

        from semmae.utils.run_lock import LOCK_NAME

        (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.root / "checkpoints" / "ckpt-000000004.pth").write_bytes(b"weights")
        (self.root / "config.yaml").write_text("seed: 0\n")
        (self.root / "log.jsonl").write_text('{"step": 4, "loss": 1.0}\n')
        from semmae.utils.ownership import Owner, write_owner

        write_owner(
            self.root,
            Owner(
                kind="run",
                verb=self.verb,
                entries=["checkpoints", "config.yaml", "log.jsonl"],
                files=["checkpoints/ckpt-000000004.pth"],
            ),
        )
        self.fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        info = {"pid": 1, "host": "elsewhere", "holder": self.verb, "verb": self.verb}
        os.pwrite(self.fd, json.dumps(info).encode(), 0)
        return self.root

    def __exit__(self, *exc):
        import os

        os.close(self.fd)


#: a tiny timm ViT's sizes (the write-safety, overwrite and marker tests' encoder)
TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)

#: a random-init tiny encoder for `semmae segment train` on 32 px crops (width 32, depth 1)
TINY_SEGMENT = [
    "--random-init",
    "--arch",
    "vit_tiny_patch8",
    "--embed-dim",
    "32",
    "--depth",
    "1",
    "--num-heads",
    "2",
]
TINY_SEGMENT += ["--crop-size", "32", "--scale-base", "32", "--head-channels", "8", "--aux-channels", "8"]
TINY_SEGMENT += ["--pool-scales", "1", "--device", "cpu", "--num-workers", "0"]


def tiny_encoder_checkpoint(path):
    """A random tiny ViT encoder checkpoint (``{"model", "model_config", "epoch"}``, seed 0) at ``path``."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(num_classes=0, **TINY_VIT)
    torch.save({"model": vit.state_dict(), "model_config": dict(TINY_VIT), "epoch": 0}, path)
    return path


def as_older_marker(folder) -> None:
    """Make ``folder``'s owner marker one a semmae from before file identities wrote (format 2): what a test that
    plays a run from an older semmae (a config without a newer field) edits in place needs beside it."""
    import json

    from semmae.utils.ownership import OWNER_NAME

    marker = json.loads((folder / OWNER_NAME).read_text())
    for key in ("ids", "home"):
        marker.pop(key, None)
    (folder / OWNER_NAME).write_text(json.dumps({**marker, "format": 2}))


def micro_pretrain_argv(images, out) -> list[str]:
    """``semmae pretrain`` of the smallest model for one epoch on the CPU: a real run folder in a few seconds."""
    return [
        *["pretrain", "--data", str(images), "--model", "mae_vit_micro_patch8", "--masking", "random"],
        *["--img-size", "32", "--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0", "--no-progress"],
        *["--device", "cpu", "--num-workers", "0", "--out", str(out)],
    ]
