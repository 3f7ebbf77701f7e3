"""RunBook: what one run records (position, history, early stopping, checkpoints, status)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.train.runbook import NonFiniteLossError, RunBook
from qcxr.train.state import create_state, optimizer


def cfg(**train):
    base = {"mode": "frozen", "max_epochs": 6, "patience": 2, "checkpoint_every": 3}
    return config_lib.from_dict({"train": {**base, **train}})


def state(value: float = 0.0):
    params = {"head": {"w": np.full((2, 3), value, np.float32)}}
    return create_state({"params": params}, optimizer(cfg().train, 10), seed=0)


def test_a_fresh_book_writes_config_and_history_header_and_clears_results(tmp_path):
    (tmp_path / "status.json").write_text('{"status": "finished"}')
    (tmp_path / "metrics.json").write_text("{}")
    book = RunBook(cfg(), tmp_path, resume=False, steps_per_epoch=10)
    assert (book.epoch, book.position, book.step, book.resumed) == (0, 0, 0, False)
    assert rundir.read_config(tmp_path) == cfg()
    assert (tmp_path / "history.csv").read_text() == ",".join(rundir.HISTORY_COLUMNS) + "\n"
    assert not (tmp_path / "status.json").exists() and not (tmp_path / "metrics.json").exists()
    assert book.label == "cxr8/cdl seed 0"


def test_steps_and_epochs_are_recorded_and_the_best_kept(tmp_path):
    book = RunBook(cfg(), tmp_path, resume=False, steps_per_epoch=4)
    for value in (1.0, 0.5, 0.25, 0.25):
        book.record_step(value)
    assert (book.step, book.position) == (4, 4)
    assert book.end_epoch(0.8, 1.0, state(1.0), 0.75) is None
    assert (book.epoch, book.position, book.step) == (1, 0, 4)
    assert book.last_train_loss == pytest.approx(0.5)
    assert book.checkpoints.best_meta() == {"epoch": 1, "step": 4, "val_loss": 0.8}
    assert book.checkpoints.latest_meta()["epoch"] == 1
    # Two epochs without improvement (patience 2) stop the run; the best stays at epoch 1.
    reasons = []
    for epoch_val in (0.9, 0.85):
        for _ in range(4):
            book.record_step(0.1)
        reasons.append(book.end_epoch(epoch_val, 1.0, state(2.0)))
    assert reasons == [None, "early_stop"] and book.training_done
    assert book.checkpoints.best_meta()["epoch"] == 1
    epochs = rundir.epoch_rows(tmp_path)
    assert list(epochs["val_loss"]) == [0.8, 0.9, 0.85]
    assert epochs["val_auroc"].iloc[0] == 0.75 and epochs["val_auroc"].iloc[1:].isna().all()
    assert list(epochs["train_loss"]) == pytest.approx([0.5, 0.1, 0.1])
    steps = pd.read_csv(tmp_path / "history.csv")
    assert list(steps[steps["val_loss"].isna()]["step"]) == list(range(1, 13))
    result = book.result()
    assert (result.status, result.reason, result.best_epoch, result.epochs) == (
        "finished",
        "early_stop",
        1,
        3,
    )
    book.checkpoints.close()


def test_checkpoint_due_only_mid_epoch_at_multiples(tmp_path):
    book = RunBook(cfg(checkpoint_every=3), tmp_path, resume=False, steps_per_epoch=10)
    assert [book.checkpoint_due(s, s + 1) for s in range(10)] == [
        s + 1 in (3, 6, 9) for s in range(10)
    ]
    assert book.checkpoint_due(0, 5) and not book.checkpoint_due(3, 5)
    assert not book.checkpoint_due(8, 10)  # the epoch end checkpoints anyway
    never = RunBook(cfg(checkpoint_every=0), tmp_path / "b", resume=False, steps_per_epoch=10)
    assert not any(never.checkpoint_due(s, s + 1) for s in range(10))


def test_a_resumed_book_continues_where_the_latest_checkpoint_stands(tmp_path):
    book = RunBook(cfg(), tmp_path, resume=False, steps_per_epoch=10)
    for value in (0.5, 0.7, 0.9):
        book.record_step(value)
    book.save_latest(state())
    book.record_step(1.1)  # after the checkpoint: lost on resume, history row cut
    book.history.flush()
    with pytest.raises(ValueError, match="--resume"):
        RunBook(cfg(), tmp_path, resume=False, steps_per_epoch=10)
    again = RunBook(cfg(patience=7), tmp_path, resume=True, steps_per_epoch=10)
    assert (again.epoch, again.position, again.step, again.resumed) == (0, 3, 3, True)
    assert again.loss_sum == pytest.approx(2.1) and again.loss_count == 3
    assert again.stopping.patience == 7  # a resumable change takes effect
    assert list(pd.read_csv(tmp_path / "history.csv")["step"]) == [1, 2, 3]
    restored, meta = again.checkpoints.restore_latest(state(5.0))
    assert meta["step"] == 3 and float(np.asarray(restored.params["head"]["w"]).max()) == 0.0
    with pytest.raises(ValueError, match="train.learning_rate"):
        RunBook(cfg(learning_rate=0.5), tmp_path, resume=True, steps_per_epoch=10)
    again.checkpoints.close()


@pytest.mark.parametrize("where", ["train", "val"])
def test_a_non_finite_loss_fails_the_run_and_says_what_was_kept(tmp_path, where):
    book = RunBook(cfg(), tmp_path, resume=False, steps_per_epoch=10)
    book.record_step(0.5)
    book.save_latest(state())
    with pytest.raises(NonFiniteLossError, match="Last good checkpoints kept") as err:
        if where == "train":
            book.record_step(math.nan)
        else:
            book.end_epoch(math.inf, 1.0, state())
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["message"] == str(err.value)
    assert "latest at step 1" in status["message"]
    assert rundir.result_of(tmp_path).status == "failed"
    book.checkpoints.close()


def test_resuming_a_history_written_before_val_auroc_keeps_its_rows(tmp_path):
    book = RunBook(cfg(), tmp_path, resume=False, steps_per_epoch=10)
    for value in (0.5, 0.7, 0.9):
        book.record_step(value)
    book.save_latest(state())
    book.checkpoints.close()
    old = "epoch,step,train_loss,val_loss,epoch_time\n" + "".join(
        f"1,{s},0.{s},,\n" for s in (1, 2, 3, 4)
    )
    (tmp_path / "history.csv").write_text(old)  # as written before the column existed
    again = RunBook(cfg(), tmp_path, resume=True, steps_per_epoch=10)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines == [",".join(rundir.HISTORY_COLUMNS), "1,1,0.1,,,", "1,2,0.2,,,", "1,3,0.3,,,"]
    again.record_step(0.4)
    again.end_epoch(0.3, 1.0, state(), 0.625)
    frame = rundir.read_history(tmp_path)
    assert list(frame["step"]) == [1, 2, 3, 4, 4]
    assert frame["val_auroc"].iloc[-1] == 0.625 and frame["val_auroc"].iloc[:-1].isna().all()
    again.checkpoints.close()
