"""A run folder's owner marker lists what the run writes, never what it finds (``semmae.utils.rundir``): so every
entry a finished run leaves must be one it noted, or ``--overwrite`` and ``--resume`` would refuse (or, before,
delete) it. Each run verb runs once, tiny, for real; then nothing in its folder is unlisted, and ``--overwrite``
(where the verb has it) deletes the run and starts again. A new writer that writes outside :mod:`semmae.utils.io`
without noting its entry fails here."""

from __future__ import annotations

import pytest
from _helpers import TINY_SEGMENT, tiny_encoder_checkpoint, write_image_folder

from semmae.cli import main
from semmae.utils.ownership import read_owner, unlisted_entries

CPU = ["--device", "cpu", "--num-workers", "0"]
MICRO = ["--img-size", "32", "--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    images = write_image_folder(root / "images", per_class=4, size=32)
    for split in ("train", "val"):
        write_image_folder(root / "split" / split, per_class=2, size=32)
    ckpt = root / "encoder.pth"
    tiny_encoder_checkpoint(ckpt)
    from semmae.data.synth import make_synthetic_dataset

    make_synthetic_dataset(root / "synseg", num_images=10, size=32, progress=False)
    return {
        "images": str(images),
        "split": str(root / "split"),
        "ckpt": str(ckpt),
        "seg": str(root / "synseg"),
    }


def _segment_train(i) -> list[str]:
    tiny = [*TINY_SEGMENT, "--iters", "2", "--batch-size", "2", "--num-vis", "1"]
    return ["segment", "train", "--config", "segment/tiny_synth", "--data", i["seg"], *tiny]


RUN_VERBS = {
    "pretrain": lambda i: [
        *["pretrain", "--data", i["images"], "--model", "mae_vit_micro_patch8", "--masking", "random"],
        *[*MICRO, "--vis-every", "1", "--no-progress", *CPU],
    ],
    "bootstrap": lambda i: [
        "bootstrap",
        "--config",
        "bootstrap/tiny_cpu",
        "--data",
        i["images"],
        *MICRO,
        *CPU,
    ],
    "parts train": lambda i: [
        *["parts", "train", "--data", i["images"], "--encoder-checkpoint", i["ckpt"], *MICRO, *CPU],
        *["--decoder-dim", "16", "--decoder-min-dim", "8", "--proj-dim", "16", "--panel-images", "2"],
    ],
    "linprobe": lambda i: [
        *["linprobe", "--mode", "full", "--data", i["split"], "--checkpoint", i["ckpt"], "--epochs", "1"],
        *["--warmup-epochs", "0", "--optimizer", "sgd", "--blrs", "0.5", "--batch-size", "4", *CPU],
    ],
    "finetune": lambda i: [
        *["finetune", "--config", "eval/finetune_cpu_tiny", "--data", i["split"], "--checkpoint", i["ckpt"]],
        *["--epochs", "1", "--batch-size", "4", *CPU],
    ],
    "knn": lambda i: ["knn", "--data", i["split"], "--checkpoint", i["ckpt"], "--batch-size", "4", *CPU],
    "segment train": _segment_train,
}  # the demo and its stage runs: tests/demo/test_demo.py (on its micro run)


@pytest.mark.parametrize("verb", sorted(RUN_VERBS))
def test_a_finished_run_lists_every_entry_it_wrote(verb, inputs, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*RUN_VERBS[verb](inputs), "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    owner = read_owner(out)
    assert owner is not None and owner.verb == verb
    assert unlisted_entries(out, owner, deep=True) == [], (
        f"semmae {verb} wrote files its marker does not record"
    )
    if verb == "segment train":  # and the evaluation of its checkpoint, a run folder of its own
        seg = tmp_path / "eval"
        ev = ["segment", "eval", "--checkpoint", str(out), "--num-vis", "1", *CPU, "--out", str(seg)]
        assert main(ev) == 0, capsys.readouterr().err
        assert unlisted_entries(seg, read_owner(seg), deep=True) == []
        assert main([*ev, "--overwrite"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert "--overwrite: deleted the previous run" in capsys.readouterr().out
    assert unlisted_entries(out, read_owner(out), deep=True) == []
