"""Issue 39 item 2: ``semmae data get imagenette|cub`` downloads (from a loopback server here), checks the md5,
unpacks into the layout the other verbs read, resumes, and never writes into a folder of a user's."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from _helpers import folder_snapshot, one_error_line
from PIL import Image

from semmae.cli import main
from semmae.data import get as get_module

WNIDS = ("n01440764", "n02102040")  # two real Imagenette classes (torchvision maps their names)
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross")
PARTS = ("back", "beak", "left eye")


def _jpeg(size=(24, 20), seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _tgz(path: Path, files: dict[str, bytes]) -> str:
    """Write a gzipped tar of ``{member path: bytes}``; returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _imagenette_files() -> dict[str, bytes]:
    files = {"imagenette2-160/noisy_imagenette.csv": b"path,noisy_labels_0\n"}
    for split in ("train", "val"):
        for c, wnid in enumerate(WNIDS):
            for i in range(2):
                files[f"imagenette2-160/{split}/{wnid}/{wnid}_{split}{i}.JPEG"] = _jpeg(seed=10 * c + i)
    return files


def _cub_files() -> dict[str, bytes]:
    """A CUB-200-2011 release in miniature: 2 classes x 2 images, one train and one test each, 3 parts."""
    files, images, labels, split, boxes, locs = {}, [], [], [], [], []
    image_id = 0
    for c, cls in enumerate(CUB_CLASSES, 1):
        for i in range(2):
            image_id += 1
            rel = f"{cls}/{cls.split('.')[1]}_{i:04d}_{image_id}.jpg"
            files[f"CUB_200_2011/images/{rel}"] = _jpeg(size=(40, 30), seed=image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 if i == 0 else 0}")
            boxes.append(f"{image_id} 2.0 3.0 30.0 20.0")
            for p in range(1, len(PARTS) + 1):
                visible = 0 if p == 3 and image_id in (1, 2) else 1
                x, y = (4.0 * p + image_id, 2.0 * p + 1) if visible else (0.0, 0.0)
                locs.append(f"{image_id} {p} {x} {y} {visible}")
    table = {
        "images.txt": images,
        "image_class_labels.txt": labels,
        "train_test_split.txt": split,
        "bounding_boxes.txt": boxes,
        "classes.txt": [f"{c} {n}" for c, n in enumerate(CUB_CLASSES, 1)],
        "parts/parts.txt": [f"{p} {n}" for p, n in enumerate(PARTS, 1)],
        "parts/part_locs.txt": locs,
    }
    for name, lines in table.items():
        files[f"CUB_200_2011/{name}"] = ("\n".join(lines) + "\n").encode()
    files["attributes.txt"] = b"1 has_bill_shape::curved\n"
    return files


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on stderr
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server of ``tmp_path/www``; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def imagenette(server, monkeypatch):
    """Serve a tiny imagenette2-160.tgz and point torchvision's Imagenette table at it; yields the archive path."""
    from torchvision.datasets import Imagenette

    www, base = server
    archive = www / "imagenette2-160.tgz"
    md5 = _tgz(archive, _imagenette_files())
    table = dict(Imagenette._ARCHIVES)
    table["160px"] = (f"{base}/imagenette2-160.tgz", md5)
    monkeypatch.setattr(Imagenette, "_ARCHIVES", table)
    return archive


@pytest.fixture
def cub(server, monkeypatch):
    """Serve a tiny CUB_200_2011.tgz and point ``SOURCES['cub']`` at it; yields the archive path."""
    www, base = server
    archive = www / "CUB_200_2011.tgz"
    md5 = _tgz(archive, _cub_files())
    source = get_module.Source(url=f"{base}/CUB_200_2011.tgz", md5=md5, filename="CUB_200_2011.tgz")
    monkeypatch.setitem(get_module.SOURCES, "cub", source)
    return archive


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_imagenette_gets_an_imagefolder_that_data_check_passes(imagenette, tmp_path, capsys):
    out = tmp_path / "imagenette"
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "wrote Imagenette (160 px): 4 train + 4 val images of 2 classes" in said
    assert sorted(p.name for p in (out / "train").iterdir()) == list(WNIDS)
    assert not (out / "downloads").exists()  # the archive is gone once unpacked
    assert main(["data", "check", "--data", str(out / "train")]) == 0
    assert main(["data", "check", "--data", str(out / "val")]) == 0

    capsys.readouterr()
    before = folder_snapshot(out)
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 0
    assert "already there: Imagenette (160 px): 4 train + 4 val images" in capsys.readouterr().out
    assert folder_snapshot(out) == before  # a second call writes nothing


def test_cub_is_converted_and_its_keypoints_read_by_parts_eval(cub, tmp_path, capsys):
    from semmae.data.folder import ImageFolderDataset
    from semmae.parts.evaluate import load_keypoints

    out = tmp_path / "cub"
    assert main(["data", "get", "cub", "--out", str(out)]) == 0
    assert "wrote CUB-200-2011: 2 train + 2 val images of 2 classes" in capsys.readouterr().out
    assert (out / "CUB_200_2011" / "images.txt").is_file() and (out / "attributes.txt").is_file()
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "001_Black_footed_Albatross",
        "002_Laysan_Albatross",
    ]
    assert (out / "convert.json").is_file()  # `semmae convert cub`'s summary: its layout
    for split, expect in (("train", [1, 3]), ("val", [2, 4])):
        data = ImageFolderDataset(out / split)
        kps, num_kinds, names = load_keypoints(out, data.relative_paths, out / split)
        assert num_kinds == len(PARTS) and names == list(PARTS)
        for arr, image_id in zip(kps, expect):
            visible = 2 if image_id in (1, 2) else 3
            assert arr.shape == (visible, 3)
            np.testing.assert_allclose(arr[0, 1:], [(4.0 + image_id) / 40, 3.0 / 30])  # x / W, y / H
    assert main(["data", "check", "--data", str(out / "val")]) == 0

    capsys.readouterr()
    before = folder_snapshot(out)
    assert main(["data", "get", "cub", "--out", str(out)]) == 0
    assert "already there: CUB-200-2011" in capsys.readouterr().out
    assert folder_snapshot(out) == before


def test_a_folder_of_a_users_is_refused_untouched(imagenette, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work\n")
    before = folder_snapshot(out)
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 2
    one_error_line(capsys, str(out), "thesis.txt", "did not write")
    assert folder_snapshot(out) == before


def test_a_users_file_added_to_a_finished_download_refuses_it(imagenette, tmp_path, capsys):
    out = tmp_path / "imagenette"
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine\n")
    capsys.readouterr()
    before = folder_snapshot(out)
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 2
    one_error_line(capsys, "notes.txt", "did not write")
    assert folder_snapshot(out) == before


def test_another_dataset_in_the_folder_is_refused(imagenette, cub, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 0
    capsys.readouterr()
    before = folder_snapshot(out)
    assert main(["data", "get", "cub", "--out", str(out)]) == 2
    one_error_line(capsys, "holds imagenette 160, not cub")
    assert folder_snapshot(out) == before


def test_a_closed_port_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/CUB_200_2011.tgz"
    monkeypatch.setitem(get_module.SOURCES, "cub", get_module.Source(url, "0" * 32, "CUB_200_2011.tgz"))
    out = tmp_path / "cub"
    assert main(["data", "get", "cub", "--out", str(out)]) == 2
    one_error_line(capsys, "cannot download", url)
    assert not out.exists()  # a first try that fetched nothing leaves no folder


def test_a_corrupt_archive_is_one_line_and_deleted(cub, tmp_path, monkeypatch, capsys):
    source = get_module.SOURCES["cub"]
    monkeypatch.setitem(get_module.SOURCES, "cub", get_module.Source(source.url, "0" * 32, source.filename))
    out = tmp_path / "cub"
    assert main(["data", "get", "cub", "--out", str(out)]) == 2
    one_error_line(capsys, "does not match md5", "0" * 32, "rerun")
    assert not (out / "downloads" / "CUB_200_2011.tgz").exists()
    assert not (out / "train").exists()
    monkeypatch.setitem(
        get_module.SOURCES, "cub", source
    )  # the right sum: the rerun finishes in the same folder
    assert main(["data", "get", "cub", "--out", str(out)]) == 0


def test_an_interrupted_download_restarts_safely(imagenette, tmp_path, monkeypatch, capsys):
    import torchvision.datasets.utils as tv_utils

    real = tv_utils._urlretrieve

    def cut_off(url, filename, chunk_size=1024 * 32):
        Path(filename).write_bytes(imagenette.read_bytes()[:100])  # half a download, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(tv_utils, "_urlretrieve", cut_off)
    out = tmp_path / "imagenette"
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 130
    assert (out / "downloads" / "imagenette2-160.tgz").stat().st_size == 100
    # an unpack cut short too: torchvision would take the folder for a finished one
    (out / "downloads" / "imagenette2-160" / "train").mkdir(parents=True)
    monkeypatch.setattr(tv_utils, "_urlretrieve", real)
    capsys.readouterr()
    assert main(["data", "get", "imagenette", "--out", str(out)]) == 0
    assert "wrote Imagenette (160 px): 4 train + 4 val images of 2 classes" in capsys.readouterr().out
    assert main(["data", "check", "--data", str(out / "train")]) == 0
