"""Issue 37: a reader of a part cache (a pretrain, a pack, an evaluation) holds a shared lock on it while it has it
open, so `parts export --overwrite` cannot replace it under the reader; the lock dies with the process."""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
from _helpers import folder_snapshot, subprocess_env, write_image_folder

from semmae.data.folder import ImageFolderDataset
from semmae.data.part_cache import PartCache
from semmae.errors import UserError

READER = """
import sys, time
from semmae.data.pretrain_dataset import PartImageDataset
ds = PartImageDataset(sys.argv[1], sys.argv[2], img_size=32, patch_size=8)
ds[0]
print("ready", flush=True)
time.sleep(300)
"""


def _cache(root, out, seed=0):
    files = ImageFolderDataset(root).relative_paths
    rng = np.random.default_rng(seed)
    w = PartCache.create(out, files, grid=4, num_parts=3, root=root, overwrite=out.exists())
    w.write(0, rng.integers(0, 4, (len(files), 4, 4)), rng.random((len(files), 4, 4)))
    return w.finalize()


@pytest.fixture
def made(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2, size=24)
    _cache(root, tmp_path / "c.parts")
    return root, tmp_path / "c.parts"


def test_overwrite_is_refused_while_another_process_reads_the_cache(made):
    root, cache = made
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(root), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        before = folder_snapshot(cache)
        with pytest.raises(UserError, match="is being read by a running process") as e:
            _cache(root, cache, seed=1)
        assert len(str(e.value).splitlines()) == 1 and str(cache) in str(e.value)
        assert folder_snapshot(cache) == before
        assert not cache.with_name("c.parts.partial").exists()
    finally:
        reader.send_signal(signal.SIGKILL)  # dies without cleaning up: the OS drops its lock
        reader.wait(timeout=60)
    _cache(root, cache, seed=1)
    assert PartCache.open(cache).meta["num_images"] == 4


def test_a_reader_in_this_process_holds_the_cache_until_released(made):
    root, cache = made
    reader = PartCache.open(cache, ImageFolderDataset(root).relative_paths, root=root)
    copy = pickle.loads(pickle.dumps(reader))  # what a spawned DataLoader worker gets: no lock of its own
    assert copy._lock_fd is None
    with pytest.raises(UserError, match="being read by a running process"):
        _cache(root, cache, seed=1)
    reader.release()
    _cache(root, cache, seed=1)
    # a reader that is garbage-collected lets go too
    PartCache.open(cache)
    _cache(root, cache, seed=2)


def test_a_reader_is_refused_while_an_export_replaces_the_cache(made):
    _, cache = made
    fd = os.open(cache / "meta.json", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what `parts export --overwrite` holds while deleting
        with pytest.raises(UserError, match=r"c.parts is being replaced \(`semmae parts export --overwrite`"):
            PartCache.open(cache)
    finally:
        os.close(fd)
    PartCache.open(cache)
