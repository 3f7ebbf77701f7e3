"""Preemption: a real SIGTERM or SIGINT to a training process mid-epoch. The process saves the
latest checkpoint where it stopped, records status "preempted" (with what was saved and how to
resume) and ends by itself; a resume then gives what an uninterrupted run gives."""

from __future__ import annotations

import signal

import pytest

from qcxr.rundir import read_status as run_status
from qcxr.train import interrupt
from qcxr.train.checkpoint import RunCheckpoints
from qcxr.train.finetune import train_finetune
from qcxr.train.frozen import train_frozen
from test_train_support import (
    _with_seed,
    assert_same_run,
    config,
    finetune_config,
    frozen_data,
    signalled_child,
    small_study,
)


def _check_preempted(results, runs, signal_name, where):
    epoch, position, step = where
    assert [r["status"] for r in results] == ["preempted"] * len(runs)
    for run, result in zip(runs, results, strict=True):
        meta = RunCheckpoints(run).latest_meta()
        assert (meta["epoch"], meta["position"], meta["step"]) == where
        status = run_status(run)
        assert status["status"] == "preempted" and status["reason"] == signal_name
        message = status["message"]
        assert "\n" not in message and result["reason"] == message
        assert f"stopped by {signal_name}" in message
        assert f"step {step} (epoch {epoch + 1}, batch {position} of" in message
        assert f"--run-dir {run} --resume" in message
        assert not (run / "predictions-nih.parquet").exists()


def _resume_and_compare(tmp_path, sections, data_args, seeds, runs):
    cfg = config(**sections)
    data = frozen_data(**data_args)
    cfgs = [_with_seed(cfg, s) for s in seeds]
    handlers = [signal.getsignal(s) for s in interrupt.SIGNALS]
    results = train_frozen(cfgs, runs, data, resume=True, progress=False)
    assert [signal.getsignal(s) for s in interrupt.SIGNALS] == handlers  # restored
    assert [r.status for r in results] == ["finished"] * len(runs)
    reference = [tmp_path / "reference" / f"seed-{s}" for s in seeds]
    train_frozen(cfgs, reference, data, progress=False)
    for run, ref in zip(runs, reference, strict=True):
        assert_same_run(run, ref)


@pytest.mark.slow  # ~26 s; `make test` keeps the CLI SIGTERM test below and the kill tests
def test_frozen_sigterm_mid_epoch_saves_and_resumes_to_the_same_result(tmp_path):
    # 10 batches per epoch in chunks of 3 (checkpoint_every): a signal during batch 4 of the
    # second epoch stops the runs at the end of that chunk, position 6 (step 16).
    sections = {
        "model": {"head": "cdl"},
        "train": {"max_epochs": 3, "checkpoint_every": 3, "vmap_seeds": "yes"},
    }
    data_args = {"n_train": 320}
    seeds = [0, 1]
    spec = {
        "mode": "frozen",
        "sections": sections,
        "seeds": seeds,
        "data": data_args,
        "out": str(tmp_path / "stopped"),
        "signal_at": [1, 4],
    }
    results, _ = signalled_child(spec, tmp_path, "SIGTERM")
    runs = [tmp_path / "stopped" / f"seed-{s}" for s in seeds]
    _check_preempted(results, runs, "SIGTERM", (1, 6, 16))
    _resume_and_compare(tmp_path, sections, data_args, seeds, runs)


@pytest.mark.slow  # the handler is the one SIGTERM takes (the test above); CI skips this
def test_frozen_sigint_saves_the_position_no_checkpoint_point_had(tmp_path):
    # No mid-epoch checkpoints: the epoch is one chunk, so a Ctrl-C during it stops the run at
    # its last batch, before validation; the resume validates, then goes on.
    sections = {"model": {"head": "cdl"}, "train": {"max_epochs": 2, "checkpoint_every": 0}}
    data_args = {"n_train": 320}
    spec = {
        "mode": "frozen",
        "sections": sections,
        "seeds": [3],
        "data": data_args,
        "out": str(tmp_path / "stopped"),
        "signal_at": [0, 2],
    }
    results, _ = signalled_child(spec, tmp_path, "SIGINT")
    runs = [tmp_path / "stopped" / "seed-3"]
    _check_preempted(results, runs, "SIGINT", (0, 10, 10))
    _resume_and_compare(tmp_path, sections, data_args, [3], runs)


def test_a_requested_stop_before_training_preempts_without_training(tmp_path):
    """A signal that came before the first step (e.g. during data loading): nothing trained,
    status says so; the flag stays set for a caller (a grid) to see, handlers are restored."""
    data = frozen_data(n_train=64)
    cfg = config(train={"max_epochs": 1})
    handlers = [signal.getsignal(s) for s in interrupt.SIGNALS]

    def stop_now(*args):
        interrupt.request("SIGTERM")

    from qcxr.train import frozen

    original = frozen.FrozenTrainer.train

    def train(self, books, hook):
        stop_now()
        return original(self, books, hook)

    frozen.FrozenTrainer.train = train
    try:
        (result,) = train_frozen([cfg], [tmp_path / "run"], data, progress=False)
    finally:
        frozen.FrozenTrainer.train = original
    assert result.status == "preempted"
    assert "nothing trained yet" in run_status(tmp_path / "run")["message"]
    assert interrupt.requested() == "SIGTERM"
    assert [signal.getsignal(s) for s in interrupt.SIGNALS] == handlers
    (result,) = train_frozen([cfg], [tmp_path / "run"], data, resume=True, progress=False)
    assert result.status == "finished" and interrupt.requested() is None


@pytest.mark.slow
def test_finetune_sigterm_after_a_step_saves_it_and_resumes_to_the_same_result(tmp_path):
    study = small_study(tmp_path / "study")
    cache = tmp_path / "cache"
    sections = {
        "model": {"head": "cdl"},
        "train": {"max_epochs": 2, "checkpoint_every": 0, "batch_size": 8},  # 4 batches/epoch
    }
    spec = {
        "mode": "finetune",
        "sections": sections,
        "seeds": [0],
        "study": str(study),
        "cache": str(cache),
        "out": str(tmp_path / "stopped"),
        "signal_at": [1, 0],
    }
    results, _ = signalled_child(spec, tmp_path, "SIGTERM")
    run = tmp_path / "stopped" / "seed-0"
    _check_preempted(results, [run], "SIGTERM", (1, 1, 5))  # right after the step it was in
    cfg = finetune_config(study, cache, **sections)
    assert train_finetune(cfg, run, resume=True, progress=False).status == "finished"
    reference = tmp_path / "reference" / "seed-0"
    train_finetune(cfg, reference, progress=False)
    assert_same_run(run, reference)


def test_sigterm_to_qcxr_train_exits_75_with_one_line_and_resume_matches(tmp_path):
    """The command as a cluster sees it: SIGTERM -> exit code 75 (documented in README and
    `--help`), the last line says what was saved and how to resume; --resume then ends where an
    uninterrupted `qcxr train` ends."""
    import os
    import subprocess
    import sys
    import time

    import pandas as pd

    from qcxr.cli import main
    from qcxr.train_cli import EXIT_PREEMPTED
    from test_train_grid import write_study_and_features

    study, features = write_study_and_features(tmp_path, frozen_data(n_train=64))
    argv = ["train", "--task", "cxr8", "--head", "cdl", "--mode", "frozen", "--study", str(study),
            "--features", str(features), "--epochs", "12", "--patience", "12",
            "--checkpoint-every", "1", "--lr", "1e-3", "--no-progress"]  # fmt: skip
    out = tmp_path / "runs"
    run = out / "cxr8" / "cdl" / "seed-0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qcxr", *argv, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not any(p.name.isdigit() for p in (run / "checkpoints" / "latest").glob("*")):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == EXIT_PREEMPTED == 75, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM" in last and f"--run-dir {run} --resume" in last
    assert run_status(run)["status"] == "preempted"
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert main([*argv, "--out", str(tmp_path / "reference")]) == 0
    reference = tmp_path / "reference" / "cxr8" / "cdl" / "seed-0"
    assert_same_run(run, reference)
    kept = pd.read_csv(run / "history.csv")
    assert len(kept[kept["val_loss"].notna()]) == 12
