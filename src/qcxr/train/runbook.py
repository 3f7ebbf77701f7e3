"""What one run records while it trains: position, early stopping, history, checkpoints,
tracking (TensorBoard, MLflow: qcxr.train.tracking), status.

The files themselves and their names belong to qcxr.rundir; this module decides when each is
written. A run is finished exactly when status.json says so, and status.json is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcxr import rundir
from qcxr.config import TABLE_FORMATS, Config
from qcxr.rundir import RunError, RunResult
from qcxr.train import parallel, tracking
from qcxr.train.checkpoint import RunCheckpoints
from qcxr.train.early_stopping import EarlyStopping
from qcxr.train.history import History
from qcxr.train.predictions import write_predictions
from qcxr.train.state import TrainState, variables_of

# on_batch(config, epoch, position, ids, augmentation) is called after every train step; tests use
# it to see what each run was fed. `augmentation` is the batch's augmentation key (finetune) or
# the chosen feature views (frozen, None for single-view stores).
BatchHook = Callable[[Config, int, int, list[str], Any], None]

# {testset: (ids, probabilities, labels, label names)} of one model
TestPredictions = dict[str, tuple[list[str], np.ndarray, np.ndarray, list[str]]]


def write_splits(config: Config, run_dir: Path) -> None:
    """<run>/splits.csv: the split of every image of a label table (drawn by patient unless
    the table says), so that the run can be reproduced and checked."""
    if config.data.format not in TABLE_FORMATS:
        return
    from qcxr.data.tables import table_splits

    table_splits(config.data).to_csv(run_dir / rundir.SPLITS, index=False)


class NonFiniteLossError(RunError):
    """A train or validation loss was NaN or infinite; the run stopped, checkpoints kept."""


class RunBook:
    """Everything one run records: position, early stopping, history, checkpoints, status."""

    last_train_loss = math.nan
    last_val_auroc = math.nan

    def __init__(self, config: Config, run_dir: str | Path, *, resume: bool, steps_per_epoch: int):
        self.config = config
        self.seed = config.train.seed
        self.run_dir = Path(run_dir)
        self.steps_per_epoch = steps_per_epoch
        self.checkpoints_every = config.train.checkpoint_every
        main = parallel.is_main_process()
        if config.train.tracking == "mlflow":
            tracking.require_mlflow()  # before anything is touched: how to install it
        if main:
            rundir.lock(self.run_dir)  # first: nothing of the run is touched by a second process
        parallel.barrier("qcxr-run-locked")  # the other processes wait until process 0 has it
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = RunCheckpoints(self.run_dir, keep=config.train.keep_checkpoints)
        if self.checkpoints.has_any() and not resume:
            raise ValueError(
                f"{self.run_dir}: holds checkpoints of an earlier run; pass --resume to continue "
                "it, or choose another --out"
            )
        meta = self.checkpoints.intact_latest_meta() if resume else None
        if resume and meta is None:
            self._start_over()
        if main:
            rundir.write_config(self.run_dir, config, resume)
            write_splits(config, self.run_dir)
        # Only process 0 writes the run's files; the others keep the same book, writing nowhere.
        self.history = History(self.run_dir / rundir.HISTORY if main else Path(os.devnull))
        self.stopping = EarlyStopping(config.train.patience, config.train.max_epochs)
        self.epoch, self.position, self.step = 0, 0, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.saved_step: int | None = None  # step of the latest checkpoint this book saved
        self.resumed = meta is not None
        if meta is not None:
            self._continue_from(meta)
        self.history.start(self.step if self.resumed else None)
        if main:
            rundir.clear_results(self.run_dir)
        self.tracker = tracking.open_tracker(
            config,
            self.run_dir,
            step=self.step,
            resumed=self.resumed,
            steps_per_epoch=steps_per_epoch,
            main=main,
        )

    def _start_over(self) -> None:
        """A resume without a latest checkpoint trains from the start; an orphaned best
        checkpoint (its latest deleted) is kept aside, not mixed with the new run's."""
        aside = self.checkpoints.set_aside_best("orphaned")
        if aside is not None:
            print(
                f"note: {self.run_dir}: no latest checkpoint to resume from; training from the "
                f"start (the run is seeded, so it repeats what was lost). The earlier best "
                f"checkpoint is kept in {aside}",
                file=sys.stderr,
            )

    def _continue_from(self, meta: dict[str, Any]) -> None:
        self.epoch, self.position, self.step = meta["epoch"], meta["position"], meta["step"]
        self.loss_sum, self.loss_count = meta["loss_sum"], meta["loss_count"]
        saved = EarlyStopping.from_dict(meta["early_stopping"])
        t = self.config.train
        self.stopping = dataclasses.replace(saved, patience=t.patience, max_epochs=t.max_epochs)

    @property
    def training_done(self) -> bool:
        return self.stopping.stop_reason is not None

    @property
    def label(self) -> str:
        return f"{self.config.task}/{self.config.model.head} seed {self.seed}"

    def meta(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "step": self.step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "early_stopping": self.stopping.to_dict(),
            "stop_reason": self.stopping.stop_reason,
            "seed": self.seed,
        }

    def record_step(self, value: float, seconds: float | None = None) -> None:
        """A train step's loss (and its wall seconds, None when not measured)."""
        if not math.isfinite(value):
            self.fail(
                f"train loss is {value} at epoch {self.epoch + 1}, batch position "
                f"{self.position} (step {self.step + 1})"
            )
        self.step += 1
        self.position += 1
        self.loss_sum += value
        self.loss_count += 1
        self.history.step(self.epoch + 1, self.step, value)
        self.tracker.step(self.step, value, seconds)

    def checkpoint_due(self, start: int, end: int) -> bool:
        """Whether batches [start, end) of this epoch crossed a mid-epoch checkpoint point."""
        every = self.checkpoints_every
        return bool(every) and end < self.steps_per_epoch and start // every != end // every

    def save_latest(self, state: TrainState) -> None:
        self.history.flush()  # rows first: a resume cuts rows beyond the checkpoint's step
        self.tracker.flush()  # events too: a resume purges those beyond it
        self._checkpoint(self.checkpoints.save_latest, self.step, state, self.meta())
        self.saved_step = self.step
        self.tracker.saved(self.step)

    def preempt(self, state: TrainState | None, signal_name: str) -> None:
        """Stop here for a signal: the latest checkpoint at this exact position (unless it is
        already saved), then status "preempted" with one line saying what was kept and how to
        resume. `state` None: the run has not trained in this process (its latest checkpoint,
        if any, is where it stands)."""
        if state is not None and self.saved_step != self.step:
            self.save_latest(state)
        latest = self.checkpoints.latest_meta() if self.step or self.resumed else None
        if latest is None:
            kept = "nothing trained yet, no checkpoint saved"
        else:
            kept = (
                f"checkpoint saved at step {latest['step']} (epoch {latest['epoch'] + 1}, "
                f"batch {latest['position']} of {self.steps_per_epoch})"
            )
        message = (
            f"{self.run_dir}: stopped by {signal_name}; {kept}. Resume with: qcxr train "
            f"--config {self.run_dir / rundir.CONFIG} --run-dir {self.run_dir} --resume "
            "(or run the same `qcxr run` grid again)"
        )
        self.write_status({"status": "preempted", "reason": signal_name, "message": message})

    def _checkpoint(self, save, step: int, tree: Any, meta: dict[str, Any]) -> None:
        """A save; one that fails marks the run failed (with what was kept) and stops it."""
        try:
            save(step, tree, meta)
        except RunError as err:
            with contextlib.suppress(OSError):  # the disk may be the one that is full
                self.write_status(
                    {"status": "failed", "reason": "checkpoint not saved", "message": str(err)}
                )
            raise

    def end_epoch(
        self, val_loss: float, epoch_time: float, state: TrainState, val_auroc: float = math.nan
    ) -> str | None:
        """Record the epoch, keep the best, checkpoint; the stop reason or None."""
        if not math.isfinite(val_loss):
            self.fail(f"validation loss is {val_loss} after epoch {self.epoch + 1}")
        train_loss = self.loss_sum / max(self.loss_count, 1)
        self.last_train_loss, self.last_val_auroc = train_loss, val_auroc
        self.stopping, improved = self.stopping.update(val_loss)
        self.history.epoch(self.epoch + 1, self.step, train_loss, val_loss, epoch_time, val_auroc)
        self.tracker.epoch(self.step, train_loss, val_loss, val_auroc)
        if improved:
            best = {"epoch": self.epoch + 1, "step": self.step, "val_loss": val_loss}
            self._checkpoint(self.checkpoints.save_best, self.step, variables_of(state), best)
        self.epoch, self.position = self.epoch + 1, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.save_latest(state)
        return self.stopping.stop_reason

    def log_epoch(self, val_loss: float, epoch_time: float) -> None:
        print(
            f"{self.label} epoch {self.epoch}/{self.config.train.max_epochs} "
            f"train {self.last_train_loss:.4f} "
            f"val {val_loss:.4f} AUROC {self.last_val_auroc:.4f} "
            f"best {self.stopping.best_loss:.4f} (epoch "
            f"{self.stopping.best_epoch}) {epoch_time:.1f}s",
            flush=True,
        )

    def fail(self, message: str) -> None:
        self.history.flush()
        self.tracker.flush()
        latest = self.checkpoints.latest_meta()
        kept = f"latest at step {latest['step']}" if latest else "none yet"
        full = (
            f"{self.run_dir}: {message}; run stopped. Last good checkpoints kept in "
            f"{self.checkpoints.directory} ({kept}). Try a lower train.learning_rate."
        )
        self.write_status({"status": "failed", "reason": "non-finite loss", "message": full})
        raise NonFiniteLossError(full)

    def write_status(self, status: dict[str, Any]) -> None:
        if parallel.is_main_process():
            rundir.write_status(self.run_dir, status)

    def result(self) -> RunResult:
        s = self.stopping
        return RunResult(
            self.run_dir, "finished", s.stop_reason or "", s.best_epoch, s.best_loss, s.epochs_done
        )

    def finish(self, tests: TestPredictions, counts: dict[str, float]) -> RunResult:
        """Predictions of the best checkpoint, train counts, then status.json (the 'done' mark)."""
        if parallel.is_main_process():
            for name, (ids, probs, labels, names) in tests.items():
                write_predictions(
                    rundir.predictions_path(self.run_dir, name), ids, probs, labels, names
                )
            rundir.write_train_counts(self.run_dir, counts)
        result = self.result()
        self.write_status(
            {
                "status": "finished",
                "reason": result.reason,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "epochs": result.epochs,
                "steps": self.step,
            }
        )
        return result

    def abandon(self) -> None:
        """Training ended by an exception: the trackers are closed now (MLflow: failed), not at
        exit, where they would overwrite what a resume in this process records."""
        self.tracker.close(None)

    def close(self) -> None:
        """Close the trackers (with the run's status), let background deletions finish and give
        the run directory up."""
        status = None
        with contextlib.suppress(OSError, ValueError):  # a status it cannot read: "failed"
            status = rundir.read_status(self.run_dir) if parallel.is_main_process() else None
        self.tracker.close((status or {}).get("status"))
        self.checkpoints.close()
        rundir.unlock(self.run_dir)
