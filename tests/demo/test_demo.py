"""`semmae demo` at the micro budget: every figure the report references decodes, every table has numbers, a
rerun skips finished stages and redoes one whose artifact was damaged."""

import json
import re

import pytest
from _helpers import as_older_marker, folder_snapshot
from PIL import Image

from semmae.cli import main


def micro_argv(out) -> list[str]:
    """`semmae demo` at the micro budget on the CPU into ``out``."""
    return ["demo", "--out", str(out), "--budget", "micro", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main([*micro_argv(out), "--num-workers", "0"]) == 0
    return out


def test_report_figures_decode_and_tables_have_numbers(demo_dir):
    md = (demo_dir / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(figures) >= 5  # parts, masks, two reconstructions, loss curves
    for rel in figures:
        with Image.open(demo_dir / rel) as img:
            img.load()
            assert img.width > 10 and img.height > 10
    tables = [block for block in md.split("\n\n") if block.startswith("| ")]
    assert len(tables) >= 3  # part quality + accuracy + paired differences
    for table in tables:
        body = table.splitlines()[2:]
        assert body, table
        for row in body:
            cells = [c.strip() for c in row.strip("|").split("|")[1:]]
            assert any(re.match(r"^[-+]?\d+(\.\d+)?", c) for c in cells), row
    html = (demo_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)  # self-contained
    accuracy = json.loads((demo_dir / "eval" / "accuracy.json").read_text())
    assert set(accuracy) == {"semmae", "semmae_gt", "mae", "random init"}  # + the ground-truth-parts oracle
    assert "SemMAE minus MAE, paired by seed" in md and "SemMAE (ground-truth parts) - MAE" in md
    oracle = json.loads((demo_dir / "parts" / "cache_gt_train" / "meta.json").read_text())
    assert oracle["producer"]["command"].endswith("--source masks")
    metrics = json.loads((demo_dir / "parts" / "part_metrics.json").read_text())
    assert {"learned", "attention", "kmeans", "spatial", "ceiling"} <= set(metrics)


def test_rerun_skips_finished_stages_and_redoes_damaged_ones(demo_dir, capsys):
    # a figure changed in place is no longer what the demo wrote (it may be yours now): the rerun names it and
    # leaves the folder as it is; once it is gone, the rerun makes it again
    (demo_dir / "figures" / "masks.png").write_bytes(b"not a png")
    before = folder_snapshot(demo_dir)
    capsys.readouterr()
    assert main([*micro_argv(demo_dir), "--num-workers", "0"]) == 2
    assert "figures/masks.png, which is not what the run wrote there" in capsys.readouterr().err
    assert folder_snapshot(demo_dir) == before
    (demo_dir / "figures" / "masks.png").unlink()
    # a folder from before the part-encoder stage was renamed: its done-file is stages/bootstrap.json
    stages = demo_dir / "stages"
    (stages / "part_encoder.json").rename(stages / "bootstrap.json")
    assert main([*micro_argv(demo_dir), "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "part_encoder", "parts", "pretrain", "evaluate"):
        assert re.search(rf"\] {stage}: .* - done already, skipped", out), stage
    assert re.search(r"\] report: .* - done in", out)  # the report always reflects the current figures
    assert re.search(r"\] masks: .* - done in", out)
    with Image.open(demo_dir / "figures" / "masks.png") as img:
        img.load()
    # put back what the demo wrote: the renamed done-file is this test's, not the demo's (its marker records
    # part_encoder.json), and the folder is shared with the tests below
    (stages / "bootstrap.json").rename(stages / "part_encoder.json")


def test_a_failing_stage_is_named(tmp_path, capsys):
    bad = tmp_path / "enc.pth"
    bad.write_bytes(b"garbage")
    code = main([*micro_argv(tmp_path / "d"), "--num-workers", "0", "--encoder-checkpoint", str(bad)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "stage 'parts' failed" in err and "enc.pth" in err and len(err.splitlines()) == 1


def test_rerun_with_other_settings_is_refused(demo_dir, capsys):
    code = main([*micro_argv(demo_dir), "--seed", "5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "other settings (seed differ)" in err and len(err.strip().splitlines()) == 1


def test_style_is_part_of_the_setup_and_reaches_the_data(demo_dir, capsys):
    argv = micro_argv(demo_dir)
    assert main([*argv, "--style", "random"]) == 2
    err = capsys.readouterr().err
    assert "other settings (style differ)" in err
    assert json.loads((demo_dir / "data" / "synth.json").read_text())["style"] == "class"
    # a folder written before --style existed (no "style" in its setup record) still resumes as class style
    setup = demo_dir / "stages" / "setup.json"
    record = json.loads(setup.read_text())
    record.pop("style")
    setup.write_text(json.dumps(record))
    as_older_marker(demo_dir)  # and its marker then recorded no file identities
    assert main([*argv, "--num-workers", "0"]) == 0
    assert "style" not in capsys.readouterr().err


def test_paired_table_reads_its_own_numbers():
    from semmae.demo.make_report import paired_table

    runs = {
        "mae": [{"seed": s, "knn_top1": 50.0 + s, "linprobe_top1": 60.0} for s in range(3)],
        "semmae": [
            {"seed": s, "knn_top1": 52.0 + s + 0.1 * s, "linprobe_top1": 60.0 + (-1) ** s} for s in range(3)
        ],
        "semmae_gt": [{"seed": s, "knn_top1": 50.0 + s, "linprobe_top1": 60.0} for s in range(3)],
    }
    table = paired_table(runs)
    knn = next(r for r in table.rows if r[0].startswith("SemMAE (learned") and r[1] == "kNN")
    assert knn[2] == "+2.0, +2.1, +2.2" and knn[3] == "+2.1" and knn[5] == "helps"
    probe = next(r for r in table.rows if r[0].startswith("SemMAE (learned") and r[1] == "linear probe")
    assert probe[2] == "+1.0, -1.0, +1.0" and probe[5] == "inconclusive"
    assert "cannot say" not in table.note  # one comparison is decided: no blanket "cannot say"
    two = {k: v[:2] for k, v in runs.items()}
    assert "too few for a verdict" in paired_table(two).note and "helps" not in [
        r[5] for r in paired_table(two).rows
    ]


def test_the_reason_the_untrained_encoder_leads_is_given_only_when_it_does():
    from semmae.demo.make_report import accuracy_table

    def runs(knn, probe):
        return [{"seed": s, "knn_top1": knn, "linprobe_top1": probe} for s in range(2)]

    behind = {"mae": runs(28.0, 80.0), "semmae": runs(30.0, 81.0), "random init": runs(35.0, 75.0)[:1]}
    note = accuracy_table(behind, "class").note
    assert "kNN: 0 of 2" in note and "classes differ in colour" in note and "demo-mae-vs-untrained" in note
    assert "colours carry no class" in accuracy_table(behind, "random").note
    ahead = {"mae": runs(40.0, 80.0), "semmae": runs(41.0, 81.0), "random init": runs(35.0, 75.0)[:1]}
    assert "Why the untrained" not in accuracy_table(ahead, "class").note
    tie = {**ahead, "mae": runs(35.0, 80.0)}  # a tie is not a lead for the pretrained encoder
    assert "classes differ in colour" in accuracy_table(tie, "class").note


def test_small_figures_are_drawn_larger_and_crisp(tmp_path):
    from semmae.demo.report import _upscale

    Image.new("RGB", (100, 40)).save(tmp_path / "small.png")
    Image.new("RGB", (900, 40)).save(tmp_path / "large.png")
    assert _upscale(tmp_path / "small.png") == " style='width:700px;image-rendering:pixelated'"
    assert _upscale(tmp_path / "large.png") == ""


def test_the_demo_encoders_model_card_lists_the_demos_own_numbers(demo_dir, tmp_path):
    """Issue 28: the card of the demo's SemMAE encoder reads correctly, with the numbers of that run."""
    out = tmp_path / "card"
    assert (
        main(["export", "--checkpoint", str(demo_dir / "pretrain" / "semmae-seed0"), "--out", str(out)]) == 0
    )
    card = (out / "README.md").read_text()
    accuracy = json.loads((demo_dir / "eval" / "accuracy.json").read_text())["semmae"][0]
    knn = next(line for line in card.splitlines() if line.startswith("| kNN |"))
    assert float(knn.split("|")[2]) == pytest.approx(accuracy["knn_top1"], abs=0.01)
    assert "this checkpoint" in knn and "n/a (<= 5 classes)" in knn
    assert any(line.startswith("| linear probe |") for line in card.splitlines())
    assert "ViT (width " in card and "{'" not in card  # the part encoder in words, not a raw dict


def test_every_run_folder_of_the_demo_lists_every_entry_it_wrote(demo_dir):
    """The demo's folder and every stage run inside it: each marker lists all its folder holds (a marker lists what
    the run writes, never what it finds, so an unlisted entry would make --overwrite refuse the demo's own files)."""
    from semmae.utils.ownership import OWNER_NAME, read_owner, unlisted_entries

    def runs_of_their_own(entry) -> bool:  # `evals/` in a finished pretraining run: the evaluations' own runs
        return entry.is_dir() and all((child / OWNER_NAME).is_file() for child in entry.iterdir())

    folders = sorted(m.parent for m in demo_dir.rglob(OWNER_NAME))
    assert demo_dir in folders and len(folders) >= 5, folders
    for folder in folders:
        unlisted = unlisted_entries(folder, read_owner(folder), deep=True)
        assert [n for n in unlisted if not runs_of_their_own(folder / n)] == [], folder
