"""The one trainer (issue 27): its public step, the one checkpoint layout and the one resume resolver."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from semmae.engine.checkpoint import CheckpointManager, find_resume, read_stage_checkpoint
from semmae.engine.precision import Precision
from semmae.engine.trainer import Trainer, gradient_step
from semmae.errors import NonFiniteLossError, UserError
from semmae.models.checkpoint_schema import TrainState

SRC = Path(__file__).resolve().parents[2] / "src" / "semmae"


class LinearStage(Trainer):
    """The smallest stage: a linear regression whose forward is the hook."""

    def __init__(self, lrs):
        torch.manual_seed(0)
        self.cfg = type("Cfg", (), {"clip_grad": None})()
        self.device, self.precision, self.step = torch.device("cpu"), Precision("fp32", "cpu"), 0
        self.model_core = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model_core.parameters(), lr=0.0)
        self.lr_schedule = np.asarray(lrs)
        self.ends = []
        self.init_step_tools()

    def forward(self, batch):
        return {"loss": (self.model_core(batch["x"]) - batch["y"]).pow(2).mean()}

    def end_step(self, step):
        self.ends.append(step)


def test_train_step_is_one_sgd_step_at_the_scheduled_rate():
    stage = LinearStage([0.5, 0.25])
    ref = torch.nn.Linear(3, 1)
    ref.load_state_dict(stage.model_core.state_dict())
    batch = {"x": torch.randn(4, 3), "y": torch.randn(4, 1)}
    for lr in (0.5, 0.25):
        losses = stage.train_step(batch)
        expected = (ref(batch["x"]) - batch["y"]).pow(2).mean()
        assert torch.equal(losses["loss"].detach(), expected.detach())
        expected.backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= lr * p.grad
                p.grad = None
        for a, b in zip(stage.model_core.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b)
        assert all(p.grad is None for p in stage.model_core.parameters())  # zeroed for the next step
    assert stage.step == 2 and stage.ends == [0, 1]
    assert stage.optimizer.param_groups[0]["lr"] == 0.25


def test_train_step_watches_for_a_non_finite_loss():
    stage = LinearStage([0.1, 0.1])
    stage.train_step({"x": torch.randn(2, 3), "y": torch.randn(2, 1)})
    stage.train_step({"x": torch.randn(2, 3), "y": torch.full((2, 1), float("nan"))})
    with pytest.raises(NonFiniteLossError, match="bad at 1"):
        stage.watch.check(lambda step: f"bad at {step}")


def test_gradient_step_is_a_plain_backward_and_step():
    torch.manual_seed(0)
    lin, ref = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(5, 3)
    opt, ref_opt = torch.optim.SGD(lin.parameters(), lr=0.3), torch.optim.SGD(ref.parameters(), lr=0.3)
    gradient_step(lin(x).pow(2).mean(), opt, lin.parameters)
    ref(x).pow(2).mean().backward()
    ref_opt.step()
    for a, b in zip(lin.parameters(), ref.parameters()):
        assert torch.equal(a, b)  # bit for bit: the fast probe's results do not move


def test_a_diverged_probe_head_leaves_the_other_heads_alone():
    """The fast probe trains one head per learning rate in one backward: the head at a rate too high for the data
    overflows, and the others must train on as if alone (a clip at an infinite norm once scaled every gradient by
    NaN and left every head at chance)."""
    good, bad = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ref = torch.nn.Linear(3, 2)
    ref.load_state_dict(good.state_dict())
    x = torch.randn(5, 3)
    opt = torch.optim.SGD([*good.parameters(), *bad.parameters()], lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loss = good(x).pow(2).mean() + (bad(x) * float("inf")).pow(2).mean()
    norm = gradient_step(loss, opt, lambda: [*good.parameters(), *bad.parameters()])
    assert not torch.isfinite(norm)  # measured, and reported as such
    ref(x).pow(2).mean().backward()
    ref_opt.step()
    for a, b in zip(good.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_one_file_calls_backward_and_builds_the_loss_scaler():
    found = {"backward": set(), "scaler": set()}
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if ".backward(" in text:
            found["backward"].add(path.name)
        if re.search(r"GradScaler|LossScaler\(", text):
            found["scaler"].add(path.name)
    assert found == {"backward": {"trainer.py"}, "scaler": {"trainer.py"}}


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_an_epoch_stage_refuses_an_old_layout_checkpoint_naming_the_cause(tmp_path):
    old = _save(tmp_path / "checkpoint.pth", {"model": {}, "optimizer": {}, "epoch": 0, "best": {}})
    with pytest.raises(UserError, match="older semmae .*no 'kind' entry.* cannot continue it"):
        read_stage_checkpoint(old, "finetune")
    ours = _save(tmp_path / "lp.pth", {"kind": "linprobe", "model": {}})
    with pytest.raises(UserError, match="not a `semmae finetune` checkpoint .*`semmae linprobe`"):
        read_stage_checkpoint(ours, "finetune")
    with pytest.raises(UserError, match="incomplete .*missing: optimizer"):
        read_stage_checkpoint(ours, "linprobe")


def test_resume_auto_takes_the_newest_loadable_and_says_what_it_skipped(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    base = {"kind": "pretrain", "model": {}, "model_config": {}, "optimizer": {}, "scaler": {}, "epoch": 0}
    base |= {"config": {}, "rng": [], "sampler": {}}
    mgr.save(TrainState.from_dict({**base, "step": 2}))
    mgr.save(TrainState.from_dict({**base, "step": 4}))
    mgr.path_for(4).write_bytes(b"not a checkpoint")
    said = []
    path, ckpt = find_resume("auto", mgr, "pretrain", said.append)
    assert path == mgr.path_for(2) and ckpt.step == 2
    assert len(said) == 1 and "skipped ckpt-000000004.pth" in said[0]
    assert find_resume("none", mgr, "pretrain") is None
    with pytest.raises(UserError, match="not a `semmae bootstrap` checkpoint"):
        find_resume(str(mgr.path_for(2)), mgr, "bootstrap")
    empty = CheckpointManager(tmp_path / "fresh", single="checkpoint.pth")
    assert find_resume("auto", empty, "parts") is None  # nothing to continue: a fresh start


def test_a_part_checkpoint_from_before_the_layout_still_resumes_and_reads(tmp_path):
    from semmae.parts.checkpoint import read_part_checkpoint

    spec = {"arch": "vit_tiny_patch16_224", "checkpoint": None, "img_size": 32, "feature_layer": 0}
    v1 = {"format": "semmae-parts", "version": 1, "encoder": spec, "model": {}, "optimizer": {}, "config": {}}
    v1 |= {"epoch": 1, "step": 4, "rng": None, "batches_rng": None, "head": {}}
    path = _save(tmp_path / "checkpoint.pth", v1)
    ckpt = read_stage_checkpoint(path, "parts")  # upgraded on read (checkpoint_schema.upgrade)
    assert ckpt.kind == "parts" and ckpt.extra["frozen_encoder"] == spec and ckpt.extra["step_in_epoch"] == 0
    assert ckpt.encoder is None and ckpt.scaler == {} and ckpt.extra["loader_rng"] is None
    assert read_part_checkpoint(path).extra["frozen_encoder"] == spec
    with pytest.raises(UserError, match="not a `semmae finetune` checkpoint"):
        read_stage_checkpoint(path, "finetune")


# ---------------------------------------------------------------------------------------- one loop skeleton (41)
def _stages():
    from semmae.bootstrap.train import Bootstrapper
    from semmae.engine.pretrain import Pretrainer
    from semmae.eval.finetune import Finetuner
    from semmae.eval.linprobe import FullProbe
    from semmae.eval.segmentation.engine import SegmentTrainer
    from semmae.parts.train import PartTrainer

    return [Pretrainer, Bootstrapper, PartTrainer, Finetuner, FullProbe, SegmentTrainer]


def test_the_trainer_owns_run_resume_checkpoint_and_stop():
    import inspect

    from semmae.engine.epoch_trainer import EpochTrainer
    from semmae.engine.step_trainer import StepTrainer

    owned = ("run", "setup", "agreed_resume", "_load", "checkpoint", "stop", "train_step", "check_finite")
    for cls in (StepTrainer, EpochTrainer, *_stages()):
        assert not [name for name in owned if name in vars(cls)], cls
    # the loops differ only in how they iterate: what each defines beyond the trainer's hooks is its own iteration
    loop_hooks = {
        "checkpoint_manager",
        "setup_loop",
        "steps_to_run",
        "train_epoch",
        "position",
        "restore_position",
    }
    for loop, own in (
        (StepTrainer, {"loader_items", "prepare", "log_extras", "describe", "online_knn"}),
        (EpochTrainer, {"epoch_batches", "loader_rng", "set_loader_rng", "steps_in_epoch"}),
    ):
        public = {n for n, v in vars(loop).items() if inspect.isfunction(v) and not n.startswith("_")}
        assert public - own - loop_hooks <= set(vars(Trainer)), (
            loop,
            public - own - loop_hooks - set(vars(Trainer)),
        )


def test_every_stage_spells_the_hooks_as_the_trainer_does():
    import inspect

    hooks = [
        n
        for n, v in vars(Trainer).items()
        if inspect.isfunction(v) and not n.startswith("_") and n != "__init__"
    ]
    checked = 0
    for stage in _stages():
        for name in hooks:
            if name in vars(stage):
                ours = list(inspect.signature(getattr(Trainer, name)).parameters)
                theirs = list(inspect.signature(vars(stage)[name]).parameters)
                assert theirs == ours, f"{stage.__name__}.{name}{theirs} vs Trainer.{name}{ours}"
                checked += 1
        assert not hasattr(stage, "losses"), stage  # the step stages' old hook name: one vocabulary
    assert checked >= 20  # forward, epoch_end, explain, model_state ... across the six stages
