"""Faults injected into training, each followed by --resume: the run continues to the result of
an uninterrupted run, or stops at once with one message naming what broke and what was kept.

A kill between the best and the latest save, a deleted checkpoints/latest, a full disk, a
truncated checkpoint file, a step saved again in one process, and a second process on the same
run directory.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from qcxr import rundir
from qcxr.rundir import RunError
from qcxr.train.checkpoint import RunCheckpoints
from qcxr.train.frozen import train_frozen
from qcxr.train.runbook import RunBook
from test_train_support import (
    TESTS,
    assert_same_run,
    config,
    frozen_data,
    killed_child,
)

SECTIONS = {"model": {"head": "cdl"}, "train": {"max_epochs": 4, "checkpoint_every": 2}}
DATA = {"n_train": 160}  # 5 batches per epoch: mid-epoch checkpoints at positions 2 and 4


def train(run: Path, resume: bool = True, **train_settings):
    cfg = config(model=SECTIONS["model"], train={**SECTIONS["train"], **train_settings})
    return train_frozen([cfg], [run], frozen_data(**DATA), resume=resume, progress=False)[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every faulted run must end equal to."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train(run, resume=False).status == "finished"
    return run


def test_killed_between_the_best_and_the_latest_save_resumes_once(tmp_path, reference):
    spec = {"mode": "frozen", "sections": SECTIONS, "seeds": [0], "data": DATA,
            "out": str(tmp_path / "killed"), "kill_after_best": 2}  # fmt: skip
    killed_child(spec, tmp_path)
    run = tmp_path / "killed" / "seed-0"
    checkpoints = RunCheckpoints(run)
    assert checkpoints.best_meta()["epoch"] == 2
    assert checkpoints.latest_meta()["epoch"] == 1  # epoch 2's latest was never written
    checkpoints.close()
    assert train(run).status == "finished"  # one resume: no crash, no loop
    assert_same_run(run, reference)


def test_a_deleted_latest_checkpoint_trains_again_and_keeps_the_old_best(
    tmp_path, reference, capsys
):
    run = tmp_path / "run"
    assert train(run, resume=False, max_epochs=2).status == "finished"
    shutil.rmtree(run / "checkpoints" / "latest")
    assert train(run).status == "finished"
    assert "no latest checkpoint to resume from" in capsys.readouterr().err
    assert list((run / "checkpoints").glob("best-orphaned-*"))  # kept, not mixed in
    assert_same_run(run, reference)


def test_a_full_disk_stops_the_run_with_what_was_kept_and_resume_continues(
    tmp_path, reference, monkeypatch
):
    run = tmp_path / "run"
    save = ocp.CheckpointManager.save
    calls = []

    def full_disk(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) == 6:  # a mid-epoch latest save of epoch 2
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(RunError, match=r"not saved .*No space left on device.*kept.*--resume"):
        train(run, resume=False)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "No space left" in status["message"]
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    assert train(run).status == "finished"
    assert_same_run(run, reference)


def test_a_truncated_checkpoint_file_is_set_aside_and_the_one_before_resumes(
    tmp_path, reference, capsys
):
    run = tmp_path / "run"
    assert train(run, resume=False, max_epochs=2).status == "finished"
    latest = run / "checkpoints" / "latest"
    newest = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    data = [p for p in (latest / str(newest)).rglob("*") if p.is_file() and p.parent.name == "d"]
    for chunk in data:  # the array data files (OCDBT), each cut to half
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    assert train(run).status == "finished"
    err = capsys.readouterr().err
    assert f"step {newest} does not read back" in err
    assert list(latest.glob(f"broken-{newest}-*"))  # kept for inspection
    assert_same_run(run, reference)


def test_every_step_broken_is_one_error_naming_them(tmp_path):
    run = tmp_path / "run"
    assert train(run, resume=False, max_epochs=1).status == "finished"
    for step in (run / "checkpoints" / "latest").iterdir():
        for f in step.rglob("*"):
            if f.is_file() and f.stat().st_size > 100:
                f.write_bytes(b"")
    with pytest.raises(RunError, match=r"no checkpoint to resume from reads back; set aside"):
        train(run, max_epochs=2)


def test_the_same_step_saved_again_in_one_process_replaces_it(tmp_path):
    checkpoints = RunCheckpoints(tmp_path)
    for value in (1.0, 2.0, 3.0):  # the old trash/<step> rename collided on the second save
        checkpoints.save_best(4, {"w": np.full(3, value, np.float32)}, {"v": value})
    checkpoints.save_best(2, {"w": np.zeros(3, np.float32)}, {"v": 0.0})  # an earlier step
    tree, meta = checkpoints.restore_best()
    assert meta == {"v": 0.0} and float(tree["w"][0]) == 0.0
    checkpoints.close()
    steps = [p.name for p in (tmp_path / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert steps == ["2"]


def test_disk_use_is_bounded_by_the_retention(tmp_path):
    run = tmp_path / "run"
    assert train(run, resume=False, max_epochs=4, checkpoint_every=1).status == "finished"
    for kind in ("latest", "best"):
        names = sorted(p.name for p in (run / "checkpoints" / kind).iterdir())
        assert len([n for n in names if n.isdigit()]) <= RunCheckpoints(run).keep, names
        assert not [n for n in names if not n.isdigit()], names  # no trash, nothing aside


def test_a_second_process_on_the_same_run_stops_before_touching_it(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from qcxr import rundir; rundir.lock({str(run)!r}); input()"],
        stdin=subprocess.PIPE,
        env={"PYTHONPATH": str(TESTS), **dict(__import__("os").environ)},
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock").exists() or not (run / ".lock").read_text():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.1)
        with pytest.raises(RunError, match=rf"in use by pid {holder.pid} on .* since"):
            RunBook(config(), run, resume=True, steps_per_epoch=5)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    book = RunBook(config(), run, resume=True, steps_per_epoch=5)  # a killed holder frees it
    book.close()
    assert rundir.read_config(run) == config()
