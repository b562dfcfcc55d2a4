"""The resumable sampler, per-item seeding, and the checkpoint manager (atomic, latest pointer, keep-last-K)."""

from __future__ import annotations

import pytest
import torch

from semmae.engine.checkpoint import CheckpointManager, load_pretrain_checkpoint, resume_path
from semmae.engine.sampler import SeededItems, StepSampler
from semmae.errors import UserError
from semmae.models.checkpoint_schema import TrainState
from semmae.utils.io import atomic_torch_save, load_checkpoint
from semmae.utils.seed import mix_seed


def _keys(n, **kw):
    return list(StepSampler(range(n), **kw))


def test_sampler_global_batches_split_contiguously_across_ranks():
    n, b = 23, 2
    one = _keys(n, batch_size=b, accum_iter=2, num_replicas=1, rank=0, seed=3)
    r0 = _keys(n, batch_size=b, accum_iter=1, num_replicas=2, rank=0, seed=3)
    r1 = _keys(n, batch_size=b, accum_iter=1, num_replicas=2, rank=1, seed=3)
    spe = n // 4
    assert len(one) == spe * 4 and len(r0) == len(r1) == spe * 2
    # micro-batch k of the 1-rank x 2-accum run = rank k's micro-batch of the 2-rank run, step by step
    for s in range(spe):
        assert one[s * 4 : s * 4 + 2] == r0[s * 2 : s * 2 + 2]
        assert one[s * 4 + 2 : s * 4 + 4] == r1[s * 2 : s * 2 + 2]
    idx = [i for _, i in one]
    assert len(set(idx)) == len(idx)  # no repeats within an epoch
    assert all(e == 0 for e, _ in one)


def test_sampler_resumes_mid_epoch_and_reshuffles_per_epoch():
    s = StepSampler(range(40), batch_size=4, accum_iter=1, num_replicas=1, rank=0, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_position(2, 3)
    assert len(s) == len(full) - 12
    assert list(s) == full[12:]
    s.set_epoch(3)
    assert [i for _, i in s] != [i for _, i in full]
    assert all(e == 3 for e, _ in s)


class _Noise(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.rand(3)


def test_seeded_items_depend_only_on_seed_epoch_index():
    ds = SeededItems(_Noise(), seed=5)
    a = ds[(1, 4)]
    torch.rand(100)  # global RNG state moves; items must not
    assert torch.equal(ds[(1, 4)], a)
    assert not torch.equal(ds[(2, 4)], a) and not torch.equal(ds[(1, 5)], a)
    assert not torch.equal(SeededItems(_Noise(), seed=6)[(1, 4)], a)
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(2**70, -1) < 2**63


def _state(step):
    return {
        "model": {"w": torch.full((2,), float(step))},
        "model_config": {"name": "x"},
        "optimizer": {},
        "scaler": {},
        "epoch": 0,
        "step": step,
        "config": {"seed": 0},
        "rng": [{"torch": torch.zeros(3)}],
        "sampler": {"epoch": 0, "step_in_epoch": step},
    }


def test_checkpoint_manager_latest_keep_last_and_weights_only(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    assert mgr.latest() is None and resume_path("auto", mgr) is None
    for step in (2, 4, 6):
        mgr.save(TrainState.from_dict(_state(step)))
    assert [p.name for p in mgr.list()] == ["ckpt-000000004.pth", "ckpt-000000006.pth"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "ckpt-000000006.pth"
    assert resume_path("auto", mgr) == mgr.path_for(6)
    assert resume_path(str(tmp_path), CheckpointManager(tmp_path / "elsewhere")) == mgr.path_for(6)
    assert resume_path(str(tmp_path / "checkpoints"), mgr) == mgr.path_for(6)
    ck = torch.load(mgr.path_for(6), weights_only=True)
    assert ck["step"] == 6 and torch.equal(ck["model"]["w"], torch.full((2,), 6.0))
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))  # no temp files left behind
    with pytest.raises(UserError, match="no such checkpoint"):
        resume_path(str(tmp_path / "nope.pth"), mgr)


def test_non_pretrain_checkpoint_refused(tmp_path):
    atomic_torch_save({"model": {}}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="missing: model_config"):
        load_pretrain_checkpoint(tmp_path / "x.pth")
    assert load_checkpoint(tmp_path / "x.pth") == {"model": {}}


def test_a_model_mismatch_says_which_keys_and_shapes_in_one_line(tmp_path):
    """Issue 29: the message used to stop at "Error(s) in loading state_dict for ...:"."""
    import torch

    from semmae.engine.checkpoint import load_states, mismatch
    from semmae.errors import UserError

    theirs = {f"extra{i}": torch.zeros(1) for i in range(5)} | {"weight": torch.zeros(3, 4)}
    with pytest.raises(UserError) as e:
        load_states(tmp_path / "c.pth", {"model": theirs}, model=torch.nn.Linear(4, 2))
    msg = str(e.value)
    assert "\n" not in msg and "missing 1 key(s): bias" in msg
    assert "unexpected 5 key(s): extra0, extra1, extra2 (+2 more)" in msg
    assert "weight is [3, 4] in the checkpoint, [2, 4] in the model" in msg
    assert mismatch(ValueError("other\nlines")) == "other"


def test_sampler_span_runs_across_epochs_with_each_epochs_own_order():
    s = StepSampler(range(40), batch_size=4, accum_iter=1, num_replicas=1, rank=0, seed=7)  # 10 steps/epoch
    per_epoch = {}
    for e in (1, 2, 3):
        s.set_epoch(e)
        per_epoch[e] = list(s)
    s.set_span(13, 34)  # epoch 1 from its step 3, all of epoch 2, epoch 3 up to its step 4
    keys = list(s)
    assert len(s) == len(keys) == (34 - 13) * 4
    assert keys == per_epoch[1][12:] + per_epoch[2] + per_epoch[3][:16]
    s.set_span(20, 20)
    assert list(s) == [] and len(s) == 0
    s.set_position(2, 3)  # a position ends at its epoch's end again
    assert list(s) == per_epoch[2][12:]
