"""Encoders by name (issue 39): ``https://`` URLs and ``hf-hub:ORG/NAME`` load through the one loader, from a
server on 127.0.0.1 only - a static file server for release files, and a fake Hugging Face Hub endpoint
(``HF_ENDPOINT``) that answers the ``/ORG/NAME/resolve/REV/FILE`` requests ``huggingface_hub`` makes. The torch hub
cache (``TORCH_HOME``) and the Hub cache (``HF_HOME``) live in tmp_path."""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from _helpers import one_error_line, write_image_folder
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from semmae.cli import main
from semmae.errors import UserError
from semmae.models.encoder_loading import load_encoder
from semmae.utils.remote import remote_name, url_cache_file

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(num_classes=0, **TINY)
    with torch.no_grad():  # non-trivial weights so a mis-load changes the output
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def release_file(layout: str, sd: dict[str, torch.Tensor]) -> object:
    """``sd`` in the layout an official release ships."""
    if layout == "ibot":  # bytedance/ibot full checkpoint: teacher/student, backbone. prefix, masked_embed
        teacher = {f"backbone.{k}": v for k, v in sd.items()}
        teacher.update(
            {"backbone.masked_embed": torch.zeros(1, 32), "head.last_layer2.weight_g": torch.ones(1, 8)}
        )
        student = {f"module.{k}": v + 1 for k, v in teacher.items()}
        return {
            "teacher": teacher,
            "student": student,
            "args": argparse.Namespace(arch="vit_small", patch_size=8),
        }
    if layout == "ibot_teacher":  # bytedance/ibot checkpoint_teacher.pth (the README's "backbone (t)")
        return {"state_dict": {**sd, "masked_embed": torch.zeros(1, 32)}}
    if layout == "dino":  # facebookresearch/dino *_pretrain.pth: the backbone's plain state dict
        return dict(sd)
    if layout == "mae":  # facebookresearch/mae mae_pretrain_vit_*.pth
        return {"model": dict(sd), "args": argparse.Namespace(model="mae_vit_base_patch16")}
    raise AssertionError(layout)


EXPECTED = {"ibot": "ibot", "ibot_teacher": "ibot", "dino": "timm", "mae": "mae_release"}


class Handler(SimpleHTTPRequestHandler):
    """Static files under ``root``, plus the Hub's ``/ORG/NAME/resolve/REV/FILE`` from ``root/hub/ORG/NAME``."""

    root: Path
    seen: list[str]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(self.root), **kwargs)

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self.seen.append(f"HEAD {self.path}")
        if "/resolve/" in self.path:
            return self.hub(body=False)
        return super().do_HEAD()

    def do_GET(self):
        self.seen.append(f"GET {self.path}")
        if "/resolve/" in self.path or self.path.startswith("/api/models/"):
            return self.hub(body=True)
        return super().do_GET()

    def hub(self, body: bool):
        if self.path.startswith("/api/models/"):  # model_info (snapshot_download); hf_hub_download needs none
            repo = "/".join(self.path.split("/")[3:5])
            folder = self.root / "hub" / repo
            info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": p.name} for p in folder.glob("*")]}
            return self.reply(200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})
        repo, rest = self.path.lstrip("/").split("/resolve/", 1)
        filename = rest.split("/", 1)[1].split("?", 1)[0]
        folder = self.root / "hub" / repo
        if not folder.is_dir():
            return self.reply(404, b"", body, {"X-Error-Code": "RepoNotFound"})
        path = folder / filename
        if not path.is_file():
            return self.reply(404, b"", body, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        data = path.read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        self.reply(200, data, body, {"X-Repo-Commit": COMMIT, "ETag": etag})

    def reply(self, status: int, data: bytes, body: bool, headers: dict[str, str]):
        self.send_response(status)
        for k, v in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """``(root, base_url, seen)``: a file server on 127.0.0.1, the Hub endpoint and both caches in tmp_path."""
    root = tmp_path / "srv"
    root.mkdir()
    seen: list[str] = []
    handler = type("H", (Handler,), {"root": root, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", base)
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    yield root, base, seen
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ref() -> VisionTransformer:
    return tiny_vit()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_release_layouts_load_by_url(layout, server, ref, images, tmp_path):
    root, base, seen = server
    torch.save(release_file(layout, ref.state_dict()), root / f"{layout}.pth")
    url = f"{base}/{layout}.pth"
    loaded = load_encoder(url, num_heads=2)
    assert loaded.layout == EXPECTED[layout]
    cached = Path(loaded.checkpoint)
    assert cached == url_cache_file(url) and cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), ref(images), rtol=0, atol=0)
    if layout == "ibot":
        assert loaded.which == "teacher"
    # the second use reads the cache: no request, also with the file gone from the server
    (root / f"{layout}.pth").unlink()
    n = len(seen)
    assert load_encoder(url, num_heads=2).layout == EXPECTED[layout] and len(seen) == n


def test_sha256_is_checked(server, ref):
    root, base, _ = server
    torch.save(release_file("dino", ref.state_dict()), root / "dino.pth")
    digest = hashlib.sha256((root / "dino.pth").read_bytes()).hexdigest()
    url = f"{base}/dino.pth"
    wrong = "0" * 64
    with pytest.raises(UserError, match="sha256 mismatch") as e:
        load_encoder(f"{url}#sha256={wrong}", num_heads=2)
    assert len(str(e.value).splitlines()) == 1 and "removed" in str(e.value)
    assert not url_cache_file(url).exists()  # a bad download is not kept
    assert load_encoder(f"{url}#sha256={digest}", num_heads=2).layout == "timm"
    with pytest.raises(UserError, match="sha256 mismatch.*cached file"):  # the cached file is checked too
        load_encoder(f"{url}#sha256={wrong}", num_heads=2)
    with pytest.raises(UserError, match="64 hex"):
        load_encoder(f"{url}#sha256=abc", num_heads=2)


def test_http_error_is_one_line(server):
    _, base, _ = server
    with pytest.raises(UserError, match="HTTP 404") as e:
        load_encoder(f"{base}/nope.pth")
    assert len(str(e.value).splitlines()) == 1


def test_knn_cli_by_url(server, ref, tmp_path, capsys):
    root, base, _ = server
    torch.save(release_file("ibot", ref.state_dict()), root / "checkpoint.pth")
    data = tmp_path / "data"
    write_image_folder(data / "train", per_class=4)
    write_image_folder(data / "val", per_class=2, seed=1)
    out = tmp_path / "knn"
    argv = ["knn", "--data", str(data), "--checkpoint", f"{base}/checkpoint.pth", "--num-heads", "2"]
    argv += ["--out", str(out), "--k", "3", "--num-workers", "0", "--device", "cpu", "--batch-size", "4"]
    assert main(argv) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["encoder"]["layout"] == "ibot"
    assert Path(r["checkpoint"]).parent == tmp_path / "torch" / "hub" / "checkpoints"


def test_unreachable_url_is_one_line_cli(server, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/ibot.pth"
    argv = ["knn", "--data", str(tmp_path), "--checkpoint", url, "--num-workers", "0", "--device", "cpu"]
    assert main(argv) == 2
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    err = one_error_line(capsys, url, str(cache), "not in the cache folder")
    assert "Traceback" not in err


def write_hub_model(root: Path, repo: str, sd: dict[str, torch.Tensor]) -> None:
    """A timm model repo as the Hub holds it: config.json (architecture + model_args) and model.safetensors."""
    folder = root / "hub" / repo
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"), {"format": "pt"})
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 0,
        "num_features": 32,
        "global_pool": "token",
        "model_args": dict(TINY),
        "pretrained_cfg": {"tag": "test", "input_size": [3, 32, 32], "num_classes": 0},
    }
    (folder / "config.json").write_text(json.dumps(config))


def test_hf_hub_name_through_fake_endpoint(server, ref, images, tmp_path, monkeypatch):
    root, _, seen = server
    write_hub_model(root, "timm/vit_micro_patch8_32.test", ref.state_dict())
    loaded = load_encoder("hf-hub:timm/vit_micro_patch8_32.test")
    assert loaded.layout == "timm_dir" and loaded.record.num_heads == 2 and loaded.record.img_size == 32
    assert Path(loaded.checkpoint).is_relative_to(tmp_path / "hf" / "hub")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), ref(images), rtol=0, atol=0)
    asked = {s.split()[1] for s in seen}
    assert {
        f"/timm/vit_micro_patch8_32.test/resolve/main/{f}" for f in ("config.json", "model.safetensors")
    } <= asked
    # cached: loads with the endpoint gone
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert load_encoder("hf-hub:timm/vit_micro_patch8_32.test").checkpoint == loaded.checkpoint


def test_hf_hub_errors_are_one_line(server, monkeypatch, tmp_path):
    with pytest.raises(UserError, match="no model timm/nothing_here") as e:
        load_encoder("hf-hub:timm/nothing_here")
    assert len(str(e.value).splitlines()) == 1
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(UserError, match="cannot be reached") as e:
        load_encoder("hf-hub:timm/vit_small_patch16_224.dino")
    assert str(tmp_path / "hf" / "hub") in str(e.value) and len(str(e.value).splitlines()) == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        load_encoder("hf-hub:timm/vit_small_patch16_224.dino")


def test_remote_names(tmp_path, monkeypatch):
    assert remote_name("hf-hub:timm/x") == "hf-hub:timm/x" and remote_name("hf_hub:timm/x") == "hf-hub:timm/x"
    assert remote_name("https://a.b/c.pth") == "https://a.b/c.pth"
    assert remote_name(Path("https://a.b/c.pth")) == "https://a.b/c.pth"  # pathlib collapsed the //
    assert remote_name("runs/x.pth") is None and remote_name("ftp://a/b") is None
    monkeypatch.chdir(tmp_path)
    Path("hf-hub:timm").mkdir()
    Path("hf-hub:timm/x").write_bytes(b"")
    assert remote_name("hf-hub:timm/x") is None  # a local file of that name wins
