"""Evaluation verbs against a hostile but fair user (issue 18): run folders, worker errors, run-directory
checkpoints and malicious pickles."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch
from _helpers import folder_snapshot, one_error_line, user_folder

from semmae.cli import main

COMMON = ["--num-workers", "0", "--device", "cpu", "--batch-size", "8"]


def test_knn_reads_a_pretraining_run_directory_and_never_writes_into_it(
    tiny_data, tmp_path, engine_run, capsys
):
    out = tmp_path / "knn"
    argv = ["knn", "--data", str(tiny_data), "--checkpoint", str(engine_run), *COMMON]
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(out)]) == 0  # a rerun replaces the results, and logs afresh
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    assert main([*argv, "--out", str(engine_run)]) == 2
    one_error_line(capsys, "holds a `semmae pretrain` run")
    assert not (engine_run / "results.json").exists()


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory, tiny_data):
    """A one-epoch micro pretraining run on the tiny eval data (its folder is what users pass around)."""
    out = tmp_path_factory.mktemp("pre") / "run"
    argv = [
        "pretrain",
        "--data",
        str(tiny_data / "train"),
        "--out",
        str(out),
        "--model",
        "mae_vit_micro_patch8",
    ]
    argv += ["--img-size", "32", "--precision", "fp32", "--no-progress", "--batch-size", "8", "--epochs", "1"]
    argv += ["--warmup-epochs", "0", "--num-workers", "0", "--masking", "random", "--vis-every", "0"]
    assert main(argv) == 0
    return out


def test_corrupt_image_in_knn_workers_is_the_sameone_error_line(tiny_data, tiny_ckpt, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "val" / "red" / "1.png").write_bytes(b"GIF89a broken")
    lines = []
    for workers in ("0", "2"):
        argv = ["knn", "--data", str(data), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / workers)]
        assert main([*argv, *COMMON, "--num-workers", workers]) == 2
        lines.append(one_error_line(capsys, "1.png"))
    assert lines[0] == lines[1]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


@pytest.mark.parametrize("zipped", [True, False])
def test_malicious_pickle_is_refused_as_code_not_called_corrupt(tiny_data, tmp_path, capsys, zipped):
    evil = tmp_path / "evil.pth"
    if zipped:
        torch.save({"model": _Evil()}, evil)
    else:
        evil.write_bytes(pickle.dumps({"model": _Evil()}, protocol=4))
    assert (
        main(
            [
                "knn",
                "--data",
                str(tiny_data),
                "--checkpoint",
                str(evil),
                "--out",
                str(tmp_path / "k"),
                *COMMON,
            ]
        )
        == 2
    )
    err = one_error_line(capsys, "refused: loading it would run code", "system")
    assert "corrupt" not in err


@pytest.mark.parametrize("verb", ["linprobe", "finetune"])
def test_fresh_eval_run_into_a_run_needs_overwrite(verb, tiny_data, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / verb
    out.mkdir()
    (out / "config.yaml").write_text("old: run\n")
    argv = [verb, "--data", str(tiny_data), "--checkpoint", str(tiny_ckpt), "--out", str(out), *COMMON]
    assert main([*argv, "--resume", "none"]) == 2
    one_error_line(capsys, "already holds a run", "--overwrite")
    assert (out / "config.yaml").read_text() == "old: run\n"


def test_segment_train_into_a_run_needs_resume_or_overwrite(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "seg"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1}\n')
    argv = [
        "segment",
        "train",
        "--data",
        str(tmp_path / "nodata"),
        "--checkpoint",
        str(tiny_ckpt),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    one_error_line(capsys, "already holds a run", "--resume auto", "--overwrite")
    assert (out / "log.jsonl").read_text() == '{"step": 1}\n'


def test_diverging_finetune_stops_with_one_line_and_keeps_no_bad_weights(
    tiny_data, tiny_ckpt, tmp_path, capsys
):
    out = tmp_path / "ft"
    argv = ["finetune", "--data", str(tiny_data), "--checkpoint", str(tiny_ckpt), "--out", str(out), *COMMON]
    argv += ["--epochs", "1", "--warmup-epochs", "0", "--blr", "1e30", "--auto-augment", "", "--mixup", "0"]
    argv += ["--cutmix", "0", "--reprob", "0"]
    assert main(argv) == 2
    one_error_line(capsys, "non-finite loss at step", "no checkpoint had been written yet")
    assert not (out / "checkpoint.pth").exists() and not (out / "best.pth").exists()


def test_refused_linprobe_leaves_its_folder_byte_identical_fresh_or_resumed(
    tiny_data, tiny_ckpt, tmp_path, capsys
):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)

    def probe(out, *extra):
        argv = ["linprobe", "--data", str(data), "--checkpoint", str(tiny_ckpt), "--out", str(out), *COMMON]
        return main(
            [*argv, "--mode", "fast", "--epochs", "2", "--warmup-epochs", "0", "--blrs", "0.1", *extra]
        )

    out = tmp_path / "probe"
    assert probe(out) == 0
    before = folder_snapshot(out)
    # the features are extracted again (another view count) and the datasets refused: after the folder's checks
    (data / "val" / "red").rename(data / "val" / "green")
    capsys.readouterr()
    assert probe(out, "--resume", "auto", "--fast-views", "1") == 2
    one_error_line(capsys, "class folders differ")
    assert folder_snapshot(out) == before  # log.jsonl's val_top1 row, config.yaml and tb/ as they were
    fresh = tmp_path / "fresh"
    assert probe(fresh) == 2
    one_error_line(capsys, "class folders differ")
    assert not fresh.exists()  # nothing left that would refuse the corrected rerun


def test_knn_into_a_users_folder_and_a_resume_with_other_data_are_refused(
    tiny_data, tiny_ckpt, tmp_path, capsys
):
    home = user_folder(tmp_path / "home")
    before = folder_snapshot(home)
    argv = ["knn", "--data", str(tiny_data), "--checkpoint", str(tiny_ckpt), *COMMON]
    assert main([*argv, "--out", str(home)]) == 2
    one_error_line(capsys, "holds no `semmae knn` run", "thesis.txt")
    assert folder_snapshot(home) == before
    out = tmp_path / "knn"
    assert main([*argv, "--out", str(out)]) == 0
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*argv[:2], str(other), *argv[3:], "--out", str(out)]) == 2
    one_error_line(capsys, f"--data {other} is not {tiny_data}")
    assert folder_snapshot(out) == before


def test_knn_with_other_settings_needs_overwrite_which_it_has(tiny_data, tiny_ckpt, tmp_path, capsys):
    """The refusal of a rerun with other settings names ``--overwrite``, so knn takes it: the earlier evaluation is
    replaced, while a user's folder stays refused with it."""
    argv = ["knn", "--data", str(tiny_data), "--checkpoint", str(tiny_ckpt), *COMMON]
    out = tmp_path / "knn"
    assert main([*argv, "--out", str(out), "--k", "3"]) == 0
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--k", "5"]) == 2
    one_error_line(capsys, "--k 3 -> 5", "--overwrite")
    assert folder_snapshot(out) == before
    assert main([*argv, "--out", str(out), "--k", "5", "--overwrite"]) == 0
    assert "k: 5" in (out / "config.yaml").read_text()
    home = user_folder(tmp_path / "home")
    mine = folder_snapshot(home)
    capsys.readouterr()
    assert main([*argv, "--out", str(home), "--overwrite"]) == 2
    one_error_line(capsys, "thesis.txt")
    assert folder_snapshot(home) == mine
