"""The write-safety harness (issue 37): every verb that writes, computed from the CLI itself, run at every target a
careless or malicious user could give it, with and without ``--overwrite``; every file it did not create must be
byte-identical afterwards, and it must end in one line (exit 2) or succeed (exit 0), never crash.

Targets: a project folder with a ``config.yaml``, ``src/`` and a thesis; the dataset the command reads (and a
folder holding it); a finished run of another verb; a live run holding its lock (and a folder inside it); a folder
with planted markers naming ``..`` and absolute paths; for single-file outputs a user's file, a run's own
``results.json`` and a live run's ``log.jsonl``. A new writing verb fails :func:`test_every_writing_verb_is_covered`
until it is added here."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil

import pytest
import torch
from _helpers import TINY_SEGMENT, live_run, pretrain_checkpoint, tiny_encoder_checkpoint, write_image_folder

from semmae.cli import build_parser, main
from semmae.data import get as get_module
from semmae.utils.ownership import OWNER_NAME, Owner, write_owner

OUTPUT_FLAGS = ("--out", "--json", "--csv")
#: nothing listens on port 1 of the loopback address: a connection is refused at once
CLOSED_PORT = "http://127.0.0.1:1/CUB_200_2011.tgz"


def writing_verbs() -> dict[str, set[str]]:
    """``{verb: its output flags}`` for every CLI verb that has ``--out``, ``--json`` or ``--csv``."""
    found: dict[str, set[str]] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
        flags = {o for a in parser._actions for o in a.option_strings} & set(OUTPUT_FLAGS)
        if path and flags:
            found[" ".join(path)] = flags

    walk(build_parser(), ())
    return found


def has_overwrite(verb: str) -> bool:
    parser = build_parser()
    for word in verb.split():
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return any("--overwrite" in a.option_strings for a in parser._actions)


#: what a verb writes: a folder (``--out DIR``) or one file (the flag and a suffix)
FILE_OUTPUTS = {
    "parts show": ("--out", ".png"),
    "masks show": ("--out", ".png"),
    "parts eval": ("--out", ".json"),
    "compare": ("--json", ".json"),
}


def _argv(verb: str, w: dict) -> list[str]:
    """The smallest command of ``verb`` (without its output flag)."""
    cpu = ["--device", "cpu", "--num-workers", "0"]
    ckpt = w["ckpt"]
    return {
        "data get": ["data", "get", "cub"],  # SOURCES['cub'] points at a closed loopback port in the test
        "data synth": ["data", "synth", "--num-images", "4", "--size", "16"],
        "data pack": ["data", "pack", "--data", w["images"], "--side", "16", "--num-workers", "0"],
        "data subset": ["data", "subset", "--data", w["images"], "--per-class", "1"],
        "bootstrap": ["bootstrap", "--data", w["images"], *cpu],
        "pretrain": ["pretrain", "--data", w["images"], "--masking", "random", *cpu],
        "parts train": ["parts", "train", "--data", w["images"], "--encoder-checkpoint", ckpt, *cpu],
        "parts export": [
            "parts",
            "export",
            "--data",
            w["images"],
            "--source",
            "attention",
            "--encoder-checkpoint",
            ckpt,
            *cpu,
        ],
        "parts show": ["parts", "show", "--data", w["images"], "--checkpoint", ckpt, "--device", "cpu"],
        "parts eval": [
            "parts",
            "eval",
            "--data",
            w["images"],
            "--cache",
            w["images"] + ".parts",
            "--device",
            "cpu",
        ],
        "masks show": ["masks", "show", "--data", w["images"], "--img-size", "32", "--patch-size", "8"],
        "export": ["export", "--checkpoint", w["pretrain_ckpt"]],
        "linprobe": ["linprobe", "--data", w["split"], "--checkpoint", ckpt, *cpu],
        "finetune": ["finetune", "--data", w["split"], "--checkpoint", ckpt, *cpu],
        "knn": ["knn", "--data", w["split"], "--checkpoint", ckpt, *cpu],
        "compare": ["compare", w["finished"]],
        "convert": ["convert", "cub", "--root", w["images"]],
        "segment train": ["segment", "train", "--data", w["split"], "--checkpoint", ckpt, *cpu],
        "segment eval": ["segment", "eval", "--data", w["split"], "--checkpoint", ckpt, *cpu],
        "demo": ["demo"],
    }[verb]


def test_every_writing_verb_is_covered():
    verbs = writing_verbs()
    known = {"data get", "data synth", "data pack", "data subset", "bootstrap", "pretrain", "parts train", "parts export",
             "parts show", "parts eval", "masks show", "export", "linprobe", "finetune", "knn", "compare",
             "convert", "segment train", "segment eval", "demo"}  # fmt: skip
    assert set(verbs) == known, "a new writing verb: give it an argv in _argv and run it through the harness"
    assert verbs["compare"] == {"--json", "--csv"}


@pytest.fixture
def world(tmp_path):
    """Everything a user owns that a careless or malicious command line could point a writer at."""
    w = tmp_path
    proj = w / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "train.py").write_text("print('mine')\n")
    (proj / "config.yaml").write_text("lr: 0.1\n")
    (proj / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (proj / "thesis.tex").write_text("\\chapter{Four years}\n")
    (proj / "notes.json").write_text('{"mine": true}\n')
    (proj / "figure.png").write_bytes(b"\x89PNG my own figure")
    # files named as semmae's outputs are (a model card, a part spec, a timm config with a `semmae` section)
    (proj / "README.md").write_text("# My project\n")
    (proj / "parts.json").write_text('{"head": "my part annotations"}\n')
    (proj / "config.json").write_text('{"semmae": {"data": "/data/cub"}, "lr": 0.1}\n')
    (proj / "convert.json").write_text('{"how I converted my data": "by hand"}\n')
    images = write_image_folder(proj / "data" / "train", per_class=2, size=32)
    for split in ("train", "val"):
        write_image_folder(w / "split" / split, per_class=2, size=32)
    ckpt = w / "inputs" / "encoder.pth"
    ckpt.parent.mkdir()
    tiny_encoder_checkpoint(ckpt)
    finished = w / "runs" / "knn-seed0"  # a finished run of another verb, as semmae leaves it
    finished.mkdir(parents=True)
    (finished / "results.json").write_text(json.dumps({"top1": 50.0, "k": 20}) + "\n")
    (finished / "config.yaml").write_text("k: 20\n")
    (finished / "log.jsonl").write_text('{"step": 0, "top1": 50.0}\n')
    write_owner(finished, Owner(kind="run", verb="knn", entries=["config.yaml", "log.jsonl", "results.json"]))
    planted = w / "planted"
    planted.mkdir()
    (w / "victim").mkdir()
    (w / "victim" / "precious.txt").write_text("someone else's\n")
    return {
        "root": w,
        "proj": proj,
        "images": str(images),
        "split": str(w / "split"),
        "ckpt": str(ckpt),
        "pretrain_ckpt": str(ckpt),
        "finished": str(finished),
        "planted": planted,
    }


def _plant(folder, verb: str, root) -> None:
    """Markers that claim the folder for ``verb`` and name paths outside it."""
    (folder / "config.yaml").write_text("x: 1\n")
    outside = ["../victim", str(root / "victim"), "..", "/"]
    owner = {"kind": "run", "verb": verb, "id": "0" * 16, "created": 0, "entries": ["config.yaml", *outside]}
    (folder / OWNER_NAME).write_text(json.dumps(owner))
    (folder / ".semmae-subset.json").write_text(
        json.dumps({"complete": True, "files": {"..": ["victim"], str(root / "victim"): ["precious.txt"]}})
    )
    (folder / "meta.json").write_text('{"kind": "mine"}\n')  # a user's, in what looks like a cache


def _hashes(root) -> dict[str, str]:
    """sha256 of every file under root (lock files aside: a claim may rewrite its holder record)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != ".semmae.lock":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _targets(verb: str, w: dict, running) -> list[str]:
    proj, root = w["proj"], w["root"]
    if verb in FILE_OUTPUTS or verb == "export":
        suffix = FILE_OUTPUTS.get(verb, ("--out", ".safetensors"))[1]
        users = {
            ".png": proj / "figure.png",
            ".json": proj / "notes.json",
            ".safetensors": proj / "thesis.tex",
        }
        targets = [
            users[suffix],
            proj / "thesis.tex",
            proj / "config.yaml",
            root / "runs" / "knn-seed0" / "results.json",
            running / "log.jsonl",
            running / f"new{suffix}",
            w["planted"] / f"new{suffix}",
            proj / "data" / "train" / "a" / "img0.png",
            w["ckpt"],
        ]
        if verb == "export":
            targets += [proj, running, running / "export", w["planted"]]
        return [str(t) for t in targets]
    return [
        str(t)
        for t in (
            proj,
            proj / "data",
            proj / "data" / "train",
            root / "split",
            root / "runs" / "knn-seed0",
            running,
            running / "inner",
            w["planted"],
            root,
        )
    ]


@pytest.mark.parametrize("verb", sorted(writing_verbs()))
def test_a_writing_verb_never_touches_a_file_it_did_not_create(verb, world, capsys, monkeypatch):
    root = world["root"]
    if verb == "data get":  # a download that got past the checks fails at once, offline, in one line
        monkeypatch.setitem(
            get_module.SOURCES, "cub", get_module.Source(CLOSED_PORT, "0" * 32, "CUB_200_2011.tgz")
        )
    _plant(world["planted"], verb, root)
    flags = sorted(writing_verbs()[verb])
    with live_run(root / "running", "pretrain" if verb != "pretrain" else "bootstrap") as running:
        for target in _targets(verb, world, running):
            for extra in ([], ["--overwrite"]) if has_overwrite(verb) else ([],):
                for flag in flags:
                    before = _hashes(root)
                    argv = [*_argv(verb, world), flag, target, *extra]
                    rc = main([str(a) for a in argv])
                    err = capsys.readouterr().err
                    assert rc in (0, 2), f"semmae {' '.join(map(str, argv))}: rc {rc}\n{err}"
                    if rc == 2:
                        lines = [ln for ln in err.splitlines() if ln.strip()]
                        assert len(lines) == 1, f"{argv}: not one line:\n{err}"
                    after = _hashes(root)
                    changed = sorted(k for k, h in before.items() if after.get(k) != h)
                    if verb == "knn" and extra and target == world["finished"]:
                        # the finished run is knn's own: --overwrite is the user asking to replace it, and only it
                        assert rc == 0 and all(k.startswith("runs/knn-seed0/") for k in changed), changed
                        continue
                    assert not changed, f"semmae {' '.join(map(str, argv))} changed or deleted {changed}"


# -- verbs run on real inputs ---------------------------------------------------------------------------------------
# The smallest argv above gives some verbs an input they refuse before they write anything (an encoder checkpoint
# is no segmentation checkpoint), so the harness never saw them write. Here each gets a real tiny input, runs once
# into a new folder (it must succeed: the run below is not vacuous), then at every target.


def _segment_run(root) -> tuple[str, list[str]]:
    """A finished `semmae segment train` run under ``root`` (2 iterations on 10 synthetic 32 px images)."""
    from semmae.data.synth import make_synthetic_dataset

    make_synthetic_dataset(root / "synseg", num_images=10, size=32, progress=False)
    run = root / "runs" / "segment-seed0"
    argv = [
        "segment",
        "train",
        "--config",
        "segment/tiny_synth",
        "--data",
        str(root / "synseg"),
        *TINY_SEGMENT,
    ]
    assert main([*argv, "--iters", "2", "--batch-size", "2", "--num-vis", "1", "--out", str(run)]) == 0
    return str(run), []


def _pretrain_checkpoint(root) -> tuple[str, list[str]]:
    """A tiny pretraining checkpoint (what `semmae export` reads; the harness's encoder file is not one)."""
    from semmae.models import create_model

    path = root / "inputs" / "pretrain.pth"
    if not path.exists():
        torch.manual_seed(0)
        pretrain_checkpoint(path, create_model("mae_vit_micro_patch8", img_size=32), masking="random")
    return str(path), []


def _part_run(root) -> tuple[str, list[str]]:
    """A finished tiny `semmae parts train` run under ``root``, and an earlier export of it whose ``encoder/`` a
    user replaced by a link to their own encoder export (writing there would write through the link)."""
    data = write_image_folder(root / "parts-data", per_class=4, size=32)
    run = root / "runs" / "parts-seed0"
    argv = [
        "parts",
        "train",
        "--data",
        str(data),
        "--encoder-checkpoint",
        str(root / "inputs" / "encoder.pth"),
    ]
    argv += [
        "--img-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    argv += ["--decoder-dim", "16", "--decoder-min-dim", "8", "--proj-dim", "16", "--panel-images", "2"]
    assert main([*argv, "--out", str(run)]) == 0
    mine, linked = root / "exports" / "my-encoder", root / "exports" / "parts-linked"
    assert main(["export", "--checkpoint", _pretrain_checkpoint(root)[0], "--out", str(mine)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(linked)]) == 0
    shutil.rmtree(linked / "encoder")
    (linked / "encoder").symlink_to(mine)
    return str(run), [str(linked)]


def _cub_release(root) -> tuple[str, list[str]]:
    """A two-image CUB-200-2011 release (the three tables `semmae convert cub` reads)."""
    release = root / "CUB_200_2011"
    write_image_folder(release / "images", classes=("001.Albatross",), per_class=2, size=16)
    (release / "images.txt").write_text("1 001.Albatross/img0.png\n2 001.Albatross/img1.png\n")
    (release / "train_test_split.txt").write_text("1 1\n2 0\n")
    (release / "image_class_labels.txt").write_text("1 1\n2 1\n")
    return str(release), []


#: ``{case: (what it builds under the world's root, its argv without --out)}``
REAL_INPUTS = {
    "segment eval": (
        _segment_run,
        lambda run: ["segment", "eval", "--checkpoint", run, "--device", "cpu", "--num-workers", "0"],
    ),
    "convert": (_cub_release, lambda release: ["convert", "cub", "--root", release]),
    "export (encoder)": (_pretrain_checkpoint, lambda ckpt: ["export", "--checkpoint", ckpt]),
    "export (part learner)": (_part_run, lambda run: ["export", "--checkpoint", run]),
}


@pytest.mark.parametrize("case", sorted(REAL_INPUTS))
def test_a_verb_on_real_inputs_never_touches_a_file_it_did_not_create(case, world, capsys):
    root = world["root"]
    build, argv_of = REAL_INPUTS[case]
    made, more = build(root)
    argv = argv_of(made)
    verb = " ".join(argv[:2]) if argv[0] in ("segment", "parts", "data") else argv[0]
    assert main([*argv, "--out", str(root / "fresh")]) == 0, capsys.readouterr().err  # it does write
    capsys.readouterr()
    _plant(world["planted"], verb, root)
    targets = [*_targets(verb, world, root / "running"), made, str(root / "runs"), *more]
    targets = [t for t in targets if not t.endswith((".png", ".json", ".safetensors", ".pth"))]  # folders
    with live_run(root / "running", "pretrain"):
        for target in targets:
            for extra in ([], ["--overwrite"]) if has_overwrite(verb) else ([],):
                before = _hashes(root)
                rc = main([*argv, "--out", target, *extra])
                err = capsys.readouterr().err
                assert rc == 2, f"semmae {' '.join(argv)} --out {target} {extra}: rc {rc}\n{err}"
                assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
                changed = sorted(k for k, h in before.items() if _hashes(root).get(k) != h)
                assert not changed, (
                    f"semmae {' '.join(argv)} --out {target} {extra} changed or deleted {changed}"
                )
