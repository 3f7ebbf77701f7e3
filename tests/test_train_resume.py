"""Kill a training process mid-epoch with a real SIGKILL, resume it, and compare with a run
that was never interrupted: same history (all but wall times), same parameters, and the same
TensorBoard scalars read back by TensorBoard (all but step times)."""

from __future__ import annotations

import jax
import pytest

from qcxr.rundir import read_status as run_status
from qcxr.train.checkpoint import RunCheckpoints
from qcxr.train.finetune import train_finetune
from qcxr.train.frozen import train_frozen
from test_train_support import (
    _with_seed,
    assert_same_run,
    config,
    finetune_config,
    frozen_data,
    killed_child,
    small_study,
)
from test_train_tracking import event_scalars


def assert_same_scalars(resumed, reference) -> None:
    got, want = event_scalars(resumed), event_scalars(reference)
    assert set(got) == set(want) and "val/auroc" in want
    for tag in set(want) - {"train/step_time"}:
        assert got[tag] == want[tag], tag


def test_frozen_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    sections = {
        "model": {"head": "cdl"},
        "train": {"max_epochs": 3, "checkpoint_every": 4, "vmap_seeds": "yes"},
    }
    data_args = {"n_train": 320}  # 10 batches per epoch: checkpoints at positions 4 and 8
    seeds = [0, 1]
    spec = {
        "mode": "frozen",
        "sections": sections,
        "seeds": seeds,
        "data": data_args,
        "out": str(tmp_path / "killed"),
        "kill_at": [1, 6],
    }
    killed_child(spec, tmp_path)
    killed = [tmp_path / "killed" / f"seed-{s}" for s in seeds]
    for run in killed:
        meta = RunCheckpoints(run).latest_meta()
        assert (meta["epoch"], meta["position"]) == (1, 4)  # mid-epoch: work after it is lost
        assert run_status(run) is None

    cfg = config(**sections)
    data = frozen_data(**data_args)
    cfgs = [_with_seed(cfg, s) for s in seeds]
    train_frozen(cfgs, killed, data, resume=True, progress=False)
    reference = [tmp_path / "reference" / f"seed-{s}" for s in seeds]
    train_frozen(cfgs, reference, data, progress=False)
    for run, ref in zip(killed, reference, strict=True):
        assert_same_run(run, ref)
        assert_same_scalars(run, ref)


@pytest.mark.slow
def test_finetune_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    study = small_study(tmp_path / "study")
    cache = tmp_path / "cache"
    sections = {
        "model": {"head": "cdl"},
        "train": {"max_epochs": 2, "checkpoint_every": 2, "batch_size": 8},  # 4 batches/epoch
    }
    spec = {
        "mode": "finetune",
        "sections": sections,
        "seeds": [0],
        "study": str(study),
        "cache": str(cache),
        "out": str(tmp_path / "killed"),
        "kill_at": [1, 3],
    }
    killed_child(spec, tmp_path)
    run = tmp_path / "killed" / "seed-0"
    meta = RunCheckpoints(run).latest_meta()
    assert (meta["epoch"], meta["position"]) == (1, 2)
    cfg = finetune_config(study, cache, **sections)
    train_finetune(cfg, run, resume=True, progress=False)
    reference = tmp_path / "reference" / "seed-0"
    train_finetune(cfg, reference, progress=False)
    assert_same_run(run, reference)
    assert_same_scalars(run, reference)
    # BatchNorm running statistics are part of what resumed identically.
    best, _ = RunCheckpoints(run).restore_best()
    assert "batch_stats" in best and jax.tree.leaves(best["batch_stats"])


def test_resume_refuses_changed_settings(tmp_path):
    data = frozen_data(n_train=64)
    cfg = config(train={"max_epochs": 1})
    train_frozen([cfg], [tmp_path / "run"], data, progress=False)
    changed = config(train={"max_epochs": 1, "learning_rate": 0.5})
    with pytest.raises(ValueError, match="learning_rate"):
        train_frozen([changed], [tmp_path / "run"], data, resume=True, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train_frozen([cfg], [tmp_path / "run"], data, resume=False, progress=False)
