"""Pairing integrity of SemMAE-vs-MAE campaigns (issue 40, item 1).

The two arms of a campaign pair share a seed so that they see the same image ids, crops, flips and initial weights
at every optimiser step and differ only in their masks. Every run here is traced in-process: the digest of the
model's weights right after ``build`` (before a resume loads anything) and, for each ``(step, shard)``, the digest
of the micro-batch the model receives (the image tensor after augmentation and normalisation, its dataset indices
and labels) and of the mask it was given. A random-masking arm and an adaptive (part-guided) arm with the same seed
must agree on everything but the masks: from a folder with 0 and 2 loader workers, from a pack, run one after the
other in one process as the campaign runner runs them (through the runner's own pretrain config), and when one arm
was stopped and resumed. Negative controls show the comparison is not vacuous: one extra draw from the data
augmentation's generator, or from the global generator before the weights are initialised, is detected; extra
draws from the global, NumPy and Python generators and from the mask generator during training are not (the
design isolates them: items are seeded from ``(seed, epoch, index)``, masks from ``(seed, step, shard)``).

What this file found: from an image folder the arm without a part cache (``train_transform``) resampled its crops
with PIL, the arm with one (``JointPartTransform``) with torch: the same boxes and flips, slightly different pixels.
The joint transform now resamples a PIL image with PIL too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _helpers import write_image_folder

from semmae.cli import main, run_stage
from semmae.data.folder import ImageFolderDataset
from semmae.data.packed import pack_dataset
from semmae.data.part_cache import PartCache
from semmae.data.pretrain_dataset import PartImageDataset
from semmae.data.transforms import JointPartTransform, train_transform
from semmae.engine.pretrain import Pretrainer
from semmae_lab.harness import Harness
from semmae_lab.plan import Arm, Plan

# a micro run (as tests/engine/conftest.py's MICRO): 8 images / batch 4 = 2 steps an epoch, 2 epochs
MICRO = "--model mae_vit_micro_patch8 --img-size 32 --precision fp32 --no-progress --vis-every 0"
MICRO += " --log-every 2 --batch-size 4 --warmup-epochs 1 --epochs 2"
STEPS = [(s, 0) for s in range(4)]  # (step, shard) of every micro-batch of a run


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Trace:
    """What one run folder's model received: initial weights per process, batch and mask per ``(step, shard)``."""

    init: list[str] = field(default_factory=list)
    batches: dict[tuple[int, int], str] = field(default_factory=dict)
    masks: dict[tuple[int, int], str] = field(default_factory=dict)


def differences(a: Trace, b: Trace) -> list[str]:
    """Where two arms of a pair saw different inputs (empty: paired). Masks are what may differ."""
    out = []
    if a.init[:1] != b.init[:1]:
        out.append(f"initial weights {a.init[:1]} != {b.init[:1]}")
    if sorted(a.batches) != sorted(b.batches):
        out.append(f"steps {sorted(a.batches)} != {sorted(b.batches)}")
    out += [
        f"batch of step {k}" for k in sorted(a.batches) if k in b.batches and a.batches[k] != b.batches[k]
    ]
    return out


def assert_paired(a: Trace, b: Trace, steps=STEPS) -> None:
    assert sorted(a.batches) == steps and len(a.init) >= 1, (sorted(a.batches), a.init)
    assert len(set(a.batches.values())) == len(steps)  # every step a new batch: the digests see the data
    diff = differences(a, b)
    assert not diff, diff


def _tracing(mp: pytest.MonkeyPatch) -> dict[str, Trace]:
    """Record every in-process pretrain (while ``mp`` holds) into ``{run folder: Trace}``."""
    runs: dict[str, Trace] = {}
    build, forward = Pretrainer.build, Pretrainer.forward

    def traced_build(self):
        build(self)
        weights = self.model_core.state_dict().values()
        runs.setdefault(str(self.cfg.out), Trace()).init.append(_digest(*weights))

    def traced_forward(self, batch):
        out = forward(self, batch)
        step, shard = self.step, self.shard
        trace = runs[str(self.cfg.out)]
        assert (step, shard) not in trace.batches  # each micro-batch is trained once, resumed or not
        inputs = (batch["image"], torch.as_tensor(batch["index"]), torch.as_tensor(batch["label"]))
        trace.batches[(step, shard)] = _digest(*inputs)
        trace.masks[(step, shard)] = _digest(self._last_vis[1])
        return out

    mp.setattr(Pretrainer, "build", traced_build)
    mp.setattr(Pretrainer, "forward", traced_forward)
    return runs


class Traces:
    """``traces[out]``: the :class:`Trace` of run folder ``out``."""

    def __init__(self, runs: dict[str, Trace]):
        self.runs = runs

    def __getitem__(self, out) -> Trace:
        return self.runs[str(out)]


@pytest.fixture
def traces(monkeypatch) -> Traces:
    return Traces(_tracing(monkeypatch))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """8 random 32x32 RGB images in two classes."""
    return write_image_folder(tmp_path_factory.mktemp("pairing") / "imgs", per_class=4, size=32, stem="")


@pytest.fixture(scope="module")
def parts(images, tmp_path_factory):
    """A 4x4 part cache of the images (mae_vit_micro_patch8 at 32 px), and packs with and without it."""
    tmp = tmp_path_factory.mktemp("parts")
    files = ImageFolderDataset(images).relative_paths
    writer = PartCache.create(tmp / "parts.cache", files, grid=4, num_parts=3)
    g = torch.Generator().manual_seed(0)
    writer.write(0, torch.randint(0, 4, (8, 4, 4), generator=g), torch.rand(8, 4, 4, generator=g))
    writer.finalize()
    pack_dataset(images, tmp / "parts.pack", 32, parts=tmp / "parts.cache", shard_size=5, progress=False)
    pack_dataset(images, tmp / "plain.pack", 32, shard_size=8, progress=False)
    return tmp


def _mae(data, out, *extra) -> list[str]:
    """The MAE arm: random masking and no part cache, as the campaigns' baseline."""
    return ["pretrain", "--data", str(data), "--out", str(out), *MICRO.split(), "--masking", "random", *extra]


def _semmae(data, out, cache, *extra) -> list[str]:
    """The SemMAE arm: the adaptive schedule on the part cache ``cache`` (None: a pack's own cells)."""
    parts = ["--parts", str(cache)] if cache else []
    return [
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(out),
        *MICRO.split(),
        "--masking",
        "adaptive",
        *parts,
        *extra,
    ]


@pytest.fixture(scope="module")
def mae_run(images, tmp_path_factory) -> Trace:
    """The MAE arm of seed 0 from the image folder with no loader worker: the reference the SemMAE runs must match."""
    out = tmp_path_factory.mktemp("mae") / "run"
    with pytest.MonkeyPatch.context() as mp:
        runs = _tracing(mp)
        assert main(_mae(images, out, "--num-workers", "0")) == 0
    return Traces(runs)[out]


def _check_masks_differ(a: Trace, b: Trace) -> None:
    assert any(a.masks[k] != b.masks[k] for k in a.masks)  # the arms do differ where they should


# -- the arms of a pair see the same data ------------------------------------------------------------------------
@pytest.mark.parametrize("augment", ["crop-flip", "flip"])
def test_joint_part_transform_gives_the_pixels_of_the_image_only_transform(augment):
    """The arm with a part cache (JointPartTransform) and the arm without (train_transform) get the same crop, flip
    and resampled pixels from a seeded generator (before the fix, the first resampled a tensor, the second a PIL
    image: same boxes, on noise at 40 -> 32 px 30 % of the values off, by up to 14 levels)."""
    from PIL import Image

    scale = (0.2, 1.0) if augment == "crop-flip" else None
    pixels = np.random.default_rng(0).integers(0, 256, (40, 43, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    part_ids, fg = torch.randint(0, 4, (4, 4)), torch.rand(4, 4)
    for normalize in (False, True):
        plain = train_transform(32, scale=scale, normalize=normalize)
        joint = JointPartTransform(32, 8, scale=scale, normalize=normalize)
        for seed in range(8):
            torch.manual_seed(seed)
            want = plain(image).as_subclass(torch.Tensor)
            torch.manual_seed(seed)
            got, cells, fg_cells = joint(image, part_ids, fg)
            assert torch.equal(got, want), (normalize, seed)
            torch.manual_seed(seed)  # the part cells are those of the tensor path, as before
            _, cells_t, fg_t = joint(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), part_ids, fg)
            assert torch.equal(cells, cells_t) and torch.equal(fg_cells, fg_t), seed


def test_arms_are_paired_from_a_folder_with_0_and_2_workers(images, parts, tmp_path, traces, mae_run):
    cache = parts / "parts.cache"
    assert main(_semmae(images, tmp_path / "w0", cache, "--num-workers", "0")) == 0
    assert_paired(mae_run, traces[tmp_path / "w0"])
    _check_masks_differ(mae_run, traces[tmp_path / "w0"])
    # the campaigns' 2 workers: each arm matches the other and the run with no worker
    assert main(_mae(images, tmp_path / "mae2", "--num-workers", "2")) == 0
    assert main(_semmae(images, tmp_path / "w2", cache, "--num-workers", "2")) == 0
    assert_paired(mae_run, traces[tmp_path / "mae2"])
    assert_paired(traces[tmp_path / "mae2"], traces[tmp_path / "w2"])


def test_arms_are_paired_with_flip_only_augmentation(images, parts, tmp_path, traces):
    # SemMAE's own augmentation (paper Sec. 4.1): resize + flip; at the images' own 32 px the resize is exact (the
    # transform test above checks resampled flip-only pixels)
    extra = ("--num-workers", "0", "--augment", "flip")
    assert main(_mae(images, tmp_path / "mae", *extra)) == 0
    assert main(_semmae(images, tmp_path / "sem", parts / "parts.cache", *extra)) == 0
    assert_paired(traces[tmp_path / "mae"], traces[tmp_path / "sem"])


def test_arms_are_paired_from_a_pack(parts, tmp_path, traces):
    # the baseline may read the plain pack or the one with part cells; either pairs with SemMAE
    runs = {
        "plain": _mae(parts / "plain.pack", tmp_path / "plain"),
        "mae": _mae(parts / "parts.pack", tmp_path / "mae"),
        "semmae": _semmae(parts / "parts.pack", tmp_path / "semmae", None),
    }
    for argv in runs.values():
        assert main([*argv, "--num-workers", "0"]) == 0
    semmae = traces[tmp_path / "semmae"]
    assert_paired(traces[tmp_path / "plain"], semmae)
    assert_paired(traces[tmp_path / "mae"], semmae)
    _check_masks_differ(traces[tmp_path / "mae"], semmae)


PLAN = Path(__file__).resolve().parents[2] / "benchmarks" / "campaigns" / "mechanism-synth-24.yaml"


def _runner_config(data, out, arm: Arm, cache, seed: int):
    """The campaign runner's own pretrain config (``Harness.pretrain_config``) of a plan's arm, on a micro budget."""
    budget = SimpleNamespace(
        model="mae_vit_micro_patch8",
        img_size=32,
        depth=2,
        decoder_depth=1,
        batch_size=4,
        blr=1.5e-4,
        precision="fp32",
        num_workers=2,  # as the mechanism-synth plans
        warmup_epochs=1,
        fine_patch=4,
        fg_keep=0.25,
    )
    harness = SimpleNamespace(p=budget, data={"train": str(data)}, device="cpu")
    harness.common = lambda: Harness.common(harness)
    cache = str(cache) if arm.parts else None
    return Harness.pretrain_config(harness, out, arm.grid_config(), seed, 2, cache)


def test_the_runner_configs_of_a_pair_differ_only_in_masking(images, parts, tmp_path):
    arms = {a.key: a for a in Plan.load(PLAN).arms}
    cfgs = {k: _runner_config(images, tmp_path / "x", a, parts / "parts.cache", 8) for k, a in arms.items()}
    for key in ("oracle", "learned"):
        a, b = cfgs["mae"], cfgs[key]
        diff = {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}
        assert diff == {"masking", "parts"}, (key, diff)


def test_arms_run_one_after_the_other_in_one_process_are_paired(images, parts, tmp_path, traces):
    """The campaign runner's order (``Plan.arm_order``), arm after arm in one process (``run_stage``, the runner's
    call) with the runner's own config; whatever the first arm leaves in the global generators (here, on top,
    plenty of extra draws) must not reach the next. Seed 9 of mechanism-synth-24 runs SemMAE (oracle parts) first
    and MAE second (MAE-first is every other test here)."""
    seed = 9
    order = [a for a in Plan.load(PLAN).arm_order(seed) if a.key in ("mae", "oracle")]
    assert [a.key for a in order] == ["oracle", "mae"]
    for arm in order:
        run_stage("pretrain", _runner_config(images, tmp_path / arm.key, arm, parts / "parts.cache", seed))
        torch.rand(1000), np.random.rand(1000), [random.random() for _ in range(1000)]
    mae, oracle = traces[tmp_path / "mae"], traces[tmp_path / "oracle"]
    assert_paired(mae, oracle)
    _check_masks_differ(mae, oracle)


def test_a_resumed_arm_stays_paired_with_an_uninterrupted_one(images, parts, tmp_path, traces, mae_run):
    argv = _semmae(images, tmp_path / "sem", parts / "parts.cache", "--num-workers", "2")
    assert main([*argv, "--max-steps", "1"]) == 0  # stopped mid-epoch at step 1
    assert sorted(traces[tmp_path / "sem"].batches) == STEPS[:1]
    assert main([*argv, "--resume", "auto"]) == 0  # on to the end, across the epoch boundary
    resumed = traces[tmp_path / "sem"]
    assert len(resumed.init) == 2  # two processes' building; the first one's weights are the initial ones
    assert_paired(mae_run, resumed)


# -- the comparison is not vacuous -------------------------------------------------------------------------------
def test_one_extra_draw_from_the_augmentation_generator_is_detected(
    images, parts, tmp_path, traces, mae_run, monkeypatch
):
    getitem = PartImageDataset.__getitem__

    def one_more_draw(self, index):  # inside SeededItems' seeded fork: the crop/flip generator
        torch.rand(1)
        return getitem(self, index)

    monkeypatch.setattr(PartImageDataset, "__getitem__", one_more_draw)
    argv = _semmae(images, tmp_path / "sem", parts / "parts.cache", "--num-workers", "0")
    assert main(argv) == 0
    diff = differences(mae_run, traces[tmp_path / "sem"])
    assert diff and all(d.startswith("batch of step") for d in diff), diff


def test_one_extra_draw_before_the_weights_are_made_is_detected(
    images, parts, tmp_path, traces, mae_run, monkeypatch
):
    import semmae.models

    create = semmae.models.create_model

    def one_more_draw(*args, **kwargs):  # between seed_everything and the initialisation
        torch.rand(1)
        return create(*args, **kwargs)

    monkeypatch.setattr(semmae.models, "create_model", one_more_draw)
    argv = _semmae(images, tmp_path / "sem", parts / "parts.cache", "--num-workers", "0")
    assert main(argv) == 0
    assert differences(mae_run, traces[tmp_path / "sem"]) == [
        f"initial weights {mae_run.init} != {traces[tmp_path / 'sem'].init}"
    ]


def test_extra_draws_in_the_masking_path_leave_the_batches_alone(
    images, parts, tmp_path, traces, mae_run, monkeypatch
):
    """Masks draw from their own generator, reseeded every step, and items reseed torch's generator from
    ``(seed, epoch, index)``: an arm drawing more during training (global torch, NumPy, Python, and the mask
    generator) changes neither its batches nor its initial weights - which is why the negative controls above
    draw from the data's generator and from the one the weights are made from."""
    draws = Pretrainer.draws

    def greedy_draws(self, batch_size, step, shard):
        out = draws(self, batch_size, step, shard)
        torch.rand(1), np.random.rand(), random.random(), torch.rand(7, generator=self.mask_gen)
        return out

    monkeypatch.setattr(Pretrainer, "draws", greedy_draws)
    argv = _semmae(images, tmp_path / "sem", parts / "parts.cache", "--num-workers", "0")
    assert main(argv) == 0
    assert_paired(mae_run, traces[tmp_path / "sem"])
