"""`--overwrite` of every verb that has one (issue 29): it deletes only what its own verb made, never a user's
folder and never anything under another run's live lock; a refused run leaves the folder byte-identical."""

from __future__ import annotations

import dataclasses

import pytest
from _helpers import (
    folder_snapshot,
    live_run,
    one_error_line,
    tiny_encoder_checkpoint,
    user_folder,
    write_image_folder,
)

from semmae.cli import config_verbs, main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """An ImageFolder, a train/val root and a tiny encoder checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    images = write_image_folder(root / "images", per_class=2, size=32)
    for split in ("train", "val"):
        write_image_folder(root / "split" / split, per_class=2, size=32)
    ckpt = tiny_encoder_checkpoint(root / "encoder.pth")
    return {"images": images, "split": root / "split", "ckpt": ckpt}


def _argv(verb: str, out, i) -> list[str]:
    """The smallest valid command of ``verb`` writing to ``out``, with ``--overwrite``."""
    cpu = ["--device", "cpu", "--num-workers", "0"]
    argv = {
        "pretrain": ["pretrain", "--data", i["images"], "--masking", "random", *cpu],
        "bootstrap": ["bootstrap", "--data", i["images"], *cpu],
        "parts train": ["parts", "train", "--data", i["images"], "--encoder-checkpoint", i["ckpt"], *cpu],
        "parts export": [
            *["parts", "export", "--data", i["images"], "--source", "attention"],
            *["--encoder-checkpoint", i["ckpt"], *cpu],
        ],
        "linprobe": ["linprobe", "--data", i["split"], "--checkpoint", i["ckpt"], *cpu],
        "finetune": ["finetune", "--data", i["split"], "--checkpoint", i["ckpt"], *cpu],
        "knn": ["knn", "--data", i["split"], "--checkpoint", i["ckpt"], *cpu],
        # the folder is claimed before the checkpoint is read, so an encoder file is enough to reach the claim
        "segment eval": ["segment", "eval", "--data", i["split"], "--checkpoint", i["ckpt"], *cpu],
        "segment train": ["segment", "train", "--data", i["split"], "--checkpoint", i["ckpt"], *cpu],
        "demo": ["demo"],
        "data pack": ["data", "pack", "--data", i["images"], "--side", "16", "--num-workers", "0"],
    }[verb]
    return [str(a) for a in argv] + ["--out", str(out), "--overwrite"]


#: verbs whose --overwrite replaces one file (tests/test_write_safety.py runs them at every target)
SINGLE_FILE_VERBS = {"compare", "masks show", "parts eval", "parts show"}
OVERWRITE_VERBS = sorted(
    name
    for name, v in config_verbs().items()
    if any(f.name == "overwrite" for f in dataclasses.fields(v.config)) and name not in SINGLE_FILE_VERBS
)


def test_every_verb_with_overwrite_is_tested():
    assert OVERWRITE_VERBS == sorted(
        [
            "bootstrap",
            "data pack",
            "demo",
            "finetune",
            "knn",
            "linprobe",
            "parts export",
            "parts train",
            "pretrain",
            "segment eval",
            "segment train",
        ]
    )


@pytest.mark.parametrize("verb", OVERWRITE_VERBS)
def test_overwrite_leaves_a_users_folder_alone(verb, inputs, tmp_path, capsys):
    home = user_folder(tmp_path / "home")
    before = folder_snapshot(home)
    assert main(_argv(verb, home, inputs)) == 2
    one_error_line(capsys, str(home), "thesis.txt")
    assert folder_snapshot(home) == before


@pytest.mark.parametrize("verb", OVERWRITE_VERBS)
def test_overwrite_respects_a_live_run(verb, inputs, tmp_path, capsys):
    other = "bootstrap" if verb == "pretrain" else "pretrain"
    with live_run(tmp_path / "running", other) as running:
        before = folder_snapshot(running)
        for out in (running, running / "inner"):
            assert main(_argv(verb, out, inputs)) == 2
            one_error_line(capsys, str(running))
            assert folder_snapshot(running) == before
