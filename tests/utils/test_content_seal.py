"""A single-file output that semmae wrote and a user changed since is the user's (:mod:`semmae.utils.content_seal`).

Each format round-trips its seal; any change to the content breaks it; a re-save of the very same content keeps
it. Through the CLI: ``export --overwrite`` of a fine-tuned encoder re-saved with the export's metadata, and
``compare --overwrite`` of a table edited by hand, are refused, the file byte-identical; unchanged, they are
replaced."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
import torch
from _helpers import micro_pretrain_argv, one_error_line, write_image_folder
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save

from semmae.cli import main
from semmae.utils import content_seal as cs
from semmae.utils.ownership import png_info, png_written_by_semmae


# -- each format: a round trip, a change, the same content re-saved -------------------------------------------------
def test_json_seal_holds_for_the_same_content_only(tmp_path):
    doc = cs.sealed_json({"written_by": "semmae compare", "rows": [{"top1": 50.25, "seeds": [0, 1]}]})
    assert list(doc)[-1] == cs.SEAL
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc, indent=1))
    assert cs.json_file_sealed(path) == doc
    path.write_text(json.dumps(doc, indent=4, sort_keys=True))  # re-indented: the same content
    assert cs.json_file_sealed(path) == doc
    edited = json.loads(path.read_text())
    edited["rows"][0]["top1"] = 50.26
    path.write_text(json.dumps(edited))
    assert cs.json_file_sealed(path) is None
    unsealed = {k: v for k, v in doc.items() if k != cs.SEAL}
    path.write_text(json.dumps(unsealed))
    assert cs.json_file_sealed(path) is None


def test_csv_seal_is_a_last_comment_line_over_the_lines_above(tmp_path):
    text = "run,kind,n,seeds,top1_mean\nmae,linprobe,3,0 1 2,54.0\n"
    sealed = cs.sealed_csv(text)
    assert sealed.startswith(text) and sealed.splitlines()[-1].startswith("# semmae_sha256 ")
    path = tmp_path / "t.csv"
    path.write_text(sealed)
    assert cs.csv_file_sealed(path)
    path.write_text(sealed.replace("54.0", "54.5"))
    assert not cs.csv_file_sealed(path)
    path.write_text(sealed + "mine,note,1,,\n")  # a row added below the seal
    assert not cs.csv_file_sealed(path)
    path.write_text(text)
    assert not cs.csv_file_sealed(path)


def test_safetensors_seal_covers_the_weights_and_leaves_them_loadable(tmp_path):
    tensors = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.ones(3, dtype=torch.float16),
    }
    path = tmp_path / "enc.safetensors"
    path.write_bytes(cs.sealed_safetensors(tensors, {"written_by": "semmae export"}))
    meta = cs.safetensors_file_sealed(path)
    assert meta is not None and meta["written_by"] == "semmae export" and len(meta[cs.SEAL]) == 64
    assert all(torch.equal(load_file(str(path))[k], v) for k, v in tensors.items())
    tuned = {**tensors, "w": tensors["w"] + 1e-3}  # fine-tuned, saved with the export's own metadata
    path.write_bytes(save(tuned, metadata=meta))
    assert cs.safetensors_file_sealed(path) is None
    path.write_bytes(save(tensors, metadata=meta))  # the very same weights re-saved
    assert cs.safetensors_file_sealed(path) == meta
    renamed = {f"encoder.{k}": v for k, v in tensors.items()}  # the same data bytes, other names
    path.write_bytes(save(renamed, metadata=meta))
    assert cs.safetensors_file_sealed(path) is None
    path.write_bytes(save({**tensors, "w": tensors["w"].reshape(3, 2)}, metadata=meta))  # another shape
    assert cs.safetensors_file_sealed(path) is None
    path.write_bytes(save(tensors, metadata={**meta, "user_notes": "tuned on my data"}))  # a note of yours
    assert cs.safetensors_file_sealed(path) is None
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert cs.safetensors_file_sealed(path) is None


def test_png_seal_covers_every_chunk(tmp_path):
    pixels = (np.arange(4 * 5 * 3) % 251).astype(np.uint8).reshape(4, 5, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=png_info("parts show"))
    sealed = cs.sealed_png(buf.getvalue())
    path = tmp_path / "fig.png"
    path.write_bytes(sealed)
    assert png_written_by_semmae(path)
    with Image.open(path) as im:
        assert (np.asarray(im) == pixels).all() and im.text["Software"] == "semmae parts show"
        text = dict(im.text)
    info = png_info("parts show")
    info.add_text(cs.SEAL, text[cs.SEAL])
    Image.fromarray(pixels).save(
        path, format="PNG", pnginfo=info, compress_level=1
    )  # the same pixels, re-encoded
    assert not png_written_by_semmae(path)
    # a caption added by a tool that keeps every other chunk as it was (exiftool's way)
    caption = b"Description\x00my caption"
    chunk = (
        len(caption).to_bytes(4, "big") + b"tEXt" + caption + zlib.crc32(b"tEXt" + caption).to_bytes(4, "big")
    )
    path.write_bytes(sealed[:33] + chunk + sealed[33:])
    assert not png_written_by_semmae(path)
    path.write_bytes(sealed + b"trailing bytes")
    assert not png_written_by_semmae(path)
    Image.fromarray(pixels).save(path, format="PNG", pnginfo=png_info("parts show"))  # signed, never sealed
    assert not png_written_by_semmae(path)
    path.write_bytes(sealed)
    assert png_written_by_semmae(path)


def test_a_json_object_naming_a_key_twice_is_never_sealed(tmp_path):
    doc = cs.sealed_json({"written_by": "semmae compare", "format": 1, "rows": []})
    text = json.dumps(doc, indent=1)
    path = tmp_path / "t.json"
    path.write_text(text.replace('"format": 1', '"format": "MY NOTE: keep this", "format": 1'))
    assert json.loads(path.read_text()) == doc  # what any reader sees: the note is hidden
    assert cs.json_file_sealed(path) is None


# -- through the CLI ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    images = write_image_folder(root / "images", per_class=4, size=32)
    assert main(micro_pretrain_argv(images, root / "run")) == 0
    return root / "run"


def test_export_overwrite_refuses_weights_you_finetuned_and_saved_with_its_metadata(
    exported, tmp_path, capsys
):
    out = tmp_path / "enc.safetensors"
    argv = ["export", "--checkpoint", str(exported), "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0  # its own file, as it wrote it: replaced
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    tuned = {k: v + 0.01 for k, v in load_file(str(out)).items()}
    out.write_bytes(save(tuned, metadata=meta))  # the metadata copied over, written_by and seal included
    kept = out.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    one_error_line(capsys, "enc.safetensors", "semmae did not write it")
    assert out.read_bytes() == kept


@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_compare_overwrite_refuses_a_table_you_edited(tmp_path, capsys, flag):
    run = tmp_path / "mae-seed0"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"top1": 50.0, "top5": 90.0}))
    out = tmp_path / f"table.{flag[2:]}"
    argv = ["compare", str(run), flag, str(out)]
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0
    out.write_text(out.read_text().replace("50.0", "51.0"))  # a hand edit that keeps compare's signature
    kept = out.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    one_error_line(capsys, flag, out.name, "semmae did not write it")
    assert out.read_bytes() == kept
