import argparse

import pytest
import torch

from semmae.errors import UserError
from semmae.utils.io import atomic_torch_save, atomic_write_text, load_checkpoint


def test_atomic_save_round_trip_weights_only(tmp_path):
    obj = {"model": {"w": torch.arange(3.0)}, "step": 4, "config": {"lr": 0.1, "sizes": [1, 2]}}
    atomic_torch_save(obj, tmp_path / "c.pth")
    back = load_checkpoint(tmp_path / "c.pth")
    assert back["step"] == 4 and torch.equal(back["model"]["w"], obj["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temp file left behind


def test_namespace_only_with_allow_namespace(tmp_path):
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, tmp_path / "official.pth")
    with pytest.raises(UserError, match="pickled argparse.Namespace"):
        load_checkpoint(tmp_path / "official.pth")
    assert load_checkpoint(tmp_path / "official.pth", allow_namespace=True)["args"].lr == 1.0


def test_bad_checkpoints_get_one_clear_message(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pth")
    with pytest.raises(UserError, match="is a folder without a checkpoint"):
        load_checkpoint(tmp_path)  # a run folder is read as its checkpoint (issue 29); this one has none
    (tmp_path / "junk.pth").write_bytes(b"garbage" * 10)
    with pytest.raises(UserError, match="cannot be read \\(corrupt or not a PyTorch file\\)"):
        load_checkpoint(tmp_path / "junk.pth")
    atomic_torch_save({"a": 1}, tmp_path / "t.pth")
    data = (tmp_path / "t.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "t.pth")


def test_unwritable_target_is_reported_and_old_file_kept(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "old")
    with pytest.raises(UserError, match="cannot write"):
        atomic_write_text(tmp_path / "f.txt" / "child", "new")  # parent is a file
    assert (tmp_path / "f.txt").read_text() == "old"


FULL_DISK = """
import resource, signal, sys
import torch
from semmae.errors import UserError
from semmae.utils.io import atomic_torch_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) like one on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    atomic_torch_save({"model": torch.zeros(100_000)}, sys.argv[1])
except UserError as e:
    print("USERERROR", e)
"""


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_old_one(tmp_path):
    """torch.save's zip writer reports a failed write as a RuntimeError; it must still be a one-line UserError."""
    import subprocess
    import sys

    target = tmp_path / "ckpt.pth"
    atomic_torch_save({"model": torch.ones(3)}, target)
    res = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(target)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"USERERROR cannot write {target}" in res.stdout and "previous file" in res.stdout
    assert torch.equal(load_checkpoint(target)["model"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # the temporary file is gone


def test_cli_turns_an_os_error_into_path_and_cause():
    import errno

    from semmae.cli import describe_os_error

    err = OSError(errno.EROFS, "Read-only file system", "/ro/run/log.jsonl")
    assert describe_os_error(err) == "/ro/run/log.jsonl: Read-only file system"


def test_written_files_follow_the_umask_like_open(tmp_path):
    """Issue 29: an export (or any atomic write) is 0644 under umask 022, not mkstemp's 0600; a file written
    over keeps its mode."""
    import os

    from semmae.utils.io import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "enc.safetensors", b"x")
        atomic_torch_save({"a": 1}, tmp_path / "c.pth")
        assert (tmp_path / "enc.safetensors").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "c.pth").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "c.pth", 0o600)
        atomic_torch_save({"a": 2}, tmp_path / "c.pth")
        assert (tmp_path / "c.pth").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_figure_that_fails_to_render_leaves_the_earlier_file_whole(tmp_path):
    """The demo's figures are saved through :func:`atomic_save_figure`: a failure while rendering leaves the earlier
    file byte-identical and no temporary file behind; a good save replaces it with a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    from semmae.utils.io import atomic_save_figure

    path = tmp_path / "fig.png"
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    atomic_save_figure(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    class Boom(RuntimeError):
        pass

    def broken(target, *args, **kwargs):  # half a file written, then the renderer dies
        if hasattr(target, "write"):
            target.write(b"\x89PNG half")
        else:
            Path(target).write_bytes(b"\x89PNG half")
        raise Boom("renderer died")

    ax.plot([1, 0], [0, 1])
    fig.canvas.print_png = broken
    with pytest.raises(Boom):
        atomic_save_figure(fig, path)
    plt.close(fig)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]
