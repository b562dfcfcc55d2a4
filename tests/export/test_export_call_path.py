"""Issue 41: a checkpoint followed call by call through ``semmae export`` passes through at most 6 semmae modules
and enters none more than twice, and its path is resolved and the file loaded once.

:func:`call_path` runs the handler of ``semmae export`` (what the parsed command line runs: the top-level parser,
built for every verb, and the guard around every verb are not part of a checkpoint's path) under
:func:`sys.setprofile` and records the semmae module of every Python function call (``frame.f_globals["__name__"]``;
calls into torch, safetensors, the standard library ... are left out). A module is *entered* each time the call
sequence moves into it from another module, so a module that calls out and then calls its own functions again
counts again. Imports are done before the traced run (a first export), so module bodies are not part of the path.

Left out of the module count: the bottom layer, ``semmae.utils.*`` and ``semmae.errors`` (``FOUNDATIONS`` in
``tests/test_import_layers.py``: they import nothing of semmae above them, so a call into them never comes back up).
They are the file primitives every verb writes through (atomic writes, the ownership check of ``--out``, the
run-folder locks those writes consult), not stops of the export's own route; counted, they add 4 modules
(``utils.io``, ``utils.ownership``, ``utils.rundir``, ``utils.run_lock``) whatever the export does. What the issue
measured in them - the checkpoint path resolved 4 times, ``utils.io.checkpoint_file`` entered 7 times - is asserted
directly: :func:`semmae.utils.io.checkpoint_file` and :func:`semmae.utils.io.load_checkpoint` are each called once
from outside ``utils.io`` (``load_checkpoint`` passes its argument through ``checkpoint_file`` itself, a no-op for the
file it is given).

``python tests/export/test_export_call_path.py`` prints the numbers (with and without the bottom layer) and the path.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

MAX_MODULES = 6
MAX_ENTRIES = 2
LEAVES = ("semmae.utils.", "semmae.errors")


def call_path(argv: list[str]) -> tuple[list[str], Counter]:
    """(the semmae modules that ``semmae ARGV`` enters, in order, one item per entry; how often each
    ``module.function`` was called from another module)."""
    from semmae.cli import build_parser

    args = build_parser().parse_args(argv)
    path: list[str] = []
    calls: Counter = Counter()

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__") or ""
        if module == "semmae" or module.startswith("semmae."):
            if frame.f_back is None or frame.f_back.f_globals.get("__name__") != module:
                calls[f"{module}.{frame.f_code.co_name}"] += 1
            if not path or path[-1] != module:
                path.append(module)

    sys.setprofile(profile)
    try:
        rc = args.func(args)
    finally:
        sys.setprofile(None)
    assert rc == 0
    return path, calls


def without_leaves(path: list[str]) -> list[str]:
    """``path`` without the bottom layer: a call into it and back is no stop (A -> utils -> A is one stop of A)."""
    out: list[str] = []
    for module in path:
        if not module.startswith(LEAVES) and (not out or out[-1] != module):
            out.append(module)
    return out


def summary(path: list[str]) -> tuple[int, int, Counter]:
    entries = Counter(path)
    return len(entries), max(entries.values()), entries


def tiny_run(root: Path) -> Path:
    """A pretraining run folder ``root/run`` with one tiny checkpoint (``run/checkpoints/ckpt-000000004.pth``)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _helpers import pretrain_checkpoint

    from semmae.models import create_model

    torch.manual_seed(0)
    mae = create_model("mae_vit_micro_patch8", img_size=32)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    pretrain_checkpoint(
        run / "checkpoints" / "ckpt-000000004.pth", mae, masking="random", epochs=3, data="imgs"
    )
    return run


def tiny_part_run(root: Path) -> Path:
    """A ``semmae parts train`` run folder ``root/parts`` (its ``checkpoint.pth``): one epoch of a tiny part learner
    on a tiny timm-layout encoder checkpoint and 12 generated images (the fixtures of ``tests/parts``)."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from semmae.cli import main
    from semmae.data.synth import make_synthetic_dataset

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=0)
    torch.save(vit.state_dict(), root / "encoder.pth")
    make_synthetic_dataset(root / "syn", num_images=12, size=32, seed=0, val_fraction=0.3, num_classes=2)
    run = root / "parts"
    argv = ["parts", "train", "--data", str(root / "syn" / "train"), "--out", str(run)]
    argv += ["--encoder-checkpoint", str(root / "encoder.pth"), "--img-size", "32", "--batch-size", "4"]
    argv += ["--num-workers", "0", "--decoder-dim", "16", "--decoder-min-dim", "8", "--proj-dim", "16"]
    assert main([*argv, "--panel-images", "2", "--epochs", "1"]) == 0
    return run


def measure(root: Path) -> tuple[list[str], Counter]:
    """``semmae export --checkpoint RUN_FOLDER --out FOLDER`` (a timm folder with its model card) followed."""
    run = tiny_run(root)
    call_path(["export", "--checkpoint", str(run), "--out", str(root / "warmup")])  # imports done
    return call_path(["export", "--checkpoint", str(run), "--out", str(root / "export")])


def measure_parts(root: Path) -> tuple[list[str], Counter]:
    """``semmae export --checkpoint PARTS_RUN_FOLDER --out FOLDER`` (the part learner's folder) followed."""
    run = tiny_part_run(root)
    call_path(["export", "--checkpoint", str(run), "--out", str(root / "parts-warmup")])  # imports done
    return call_path(["export", "--checkpoint", str(run), "--out", str(root / "parts-export")])


def check(path: list[str], calls: Counter) -> None:
    route = without_leaves(path)
    modules, most, entries = summary(route)
    detail = f"{len(route)} stops: {' -> '.join(route)}; entries {dict(entries)}"
    assert modules <= MAX_MODULES, detail
    assert most <= MAX_ENTRIES, detail
    assert calls["semmae.utils.io.checkpoint_file"] == 1  # the path resolved once
    assert calls["semmae.utils.io.load_checkpoint"] == 1  # the file read once


def test_semmae_export_passes_few_modules_and_enters_each_at_most_twice(tmp_path):
    check(*measure(tmp_path))


def test_a_part_learner_export_passes_few_modules_and_enters_each_at_most_twice(tmp_path):
    check(*measure_parts(tmp_path))


if __name__ == "__main__":
    import tempfile

    for title, measured in (("encoder export", measure), ("part-learner export", measure_parts)):
        with tempfile.TemporaryDirectory() as tmp:
            path, calls = measured(Path(tmp))
        print(f"== {title}")
        for label, p in (("every semmae module", path), ("without utils/errors", without_leaves(path))):
            modules, most, entries = summary(p)
            print(f"{label}: {len(p)} stops, {modules} modules, max entries {most}")
            for module, n in entries.most_common():
                print(f"  {n:3d}  {module}")
            print("  " + " -> ".join(p))
        print(
            f"checkpoint_file called {calls['semmae.utils.io.checkpoint_file']}x, "
            f"load_checkpoint {calls['semmae.utils.io.load_checkpoint']}x"
        )
