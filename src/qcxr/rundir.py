"""A run directory: where it lies, what it holds, and reading and writing its files.

    <experiment>/<task>/<head>/seed-<k>/
      config.yaml                   the run's settings (re-read on resume)
      versions.json                 libraries, device, label-file checksums, weights, sessions
      history.csv                   one row per train step and per epoch end (train.history)
      tensorboard/                  TensorBoard event files (train.tracking)
      tracking.json                 the run's MLflow run id and tracking URI (train.tracking:
                                    mlflow), so a resume continues it and a report joins it
      checkpoints/{latest,best}/    Orbax (train.checkpoint)
      train_counts.json             positive count per label in the training split
      feature_norm.safetensors      frozen mode with train.standardize_features
      splits.csv                    a label table's split of every image (data.format table,
                                    chexpert): id, patient, split
      predictions-<testset>.parquet "id", then "p:L" and "y:L" per label L (train.predictions)
      status.json                   written last by training: the run is finished exactly when
                                    it says so
      .lock                         held (flock) by the process training the run
      metrics.json                  written after training by the caller (qcxr.evaluate.metrics),
                                    recomputed from the predictions when missing

Every other module names these files through the constants and functions here.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qcxr import config as config_lib
from qcxr.config import Config

CONFIG = "config.yaml"
VERSIONS = "versions.json"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
TRAIN_COUNTS = "train_counts.json"
FEATURE_NORM = "feature_norm.safetensors"
STATUS = "status.json"
METRICS = "metrics.json"
PREDICTIONS_PREFIX = "predictions-"
LOCK = ".lock"
PREEMPTED = "preempted"  # status of a run stopped by SIGTERM or SIGINT, its state saved
# val_auroc came later: a history.csv written before it reads back with that column NaN.
HISTORY_REQUIRED = ("epoch", "step", "train_loss", "val_loss", "epoch_time")
HISTORY_COLUMNS = (*HISTORY_REQUIRED, "val_auroc")
TENSORBOARD = "tensorboard"
TRACKING = "tracking.json"
SPLITS = "splits.csv"  # a label table's split of every image (id, patient, split)

# Config keys a resumed run may change (they do not alter what is computed).
RESUMABLE_CHANGES = frozenset(
    {
        "train.max_epochs",
        "train.patience",
        "train.keep_checkpoints",
        "train.require_external_test",
        "train.tracking",
        "data.cache",
        "data.loader_threads",
        "data.prefetch",
        "data.study",
        "data.features",
    }
)


def run_path(experiment_dir: str | Path, task: str, head: str, seed: int) -> Path:
    """<experiment>/<task>/<head>/seed-<k>: where a run of the grid layout lives."""
    return Path(experiment_dir) / task / head / f"seed-{seed}"


def seed_of(run_dir: str | Path) -> int | None:
    """k of a run directory named seed-<k> (None for another name)."""
    name = Path(run_dir).name
    number = name.removeprefix("seed-")
    return int(number) if name.startswith("seed-") and number.isdigit() else None


def config_run_path(experiment_dir: str | Path, config: Config) -> Path:
    return run_path(experiment_dir, config.task, config.model.head, config.train.seed)


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether a run directory holds a saved step of either kind (latest or best)."""
    root = Path(run_dir) / CHECKPOINTS
    return any(p.name.isdigit() for kind in ("latest", "best") for p in root.glob(f"{kind}/*"))


def experiment_of(run_dir: str | Path) -> Path:
    """The experiment directory of a run in the grid layout: three levels up (its parent when
    the path has fewer levels)."""
    run_dir = Path(run_dir)
    return run_dir.parents[2] if len(run_dir.parents) > 2 else run_dir.parent


class RunError(RuntimeError):
    """A run cannot go on; the message names the run, what is broken, what was kept and what to
    do. The command line prints it as one line."""


# -------------------------------------------------------------------------------------- lock

_HELD: dict[Path, int] = {}  # run directory -> open descriptor of its locked .lock file


def lock(run_dir: str | Path) -> None:
    """Take the run directory for this process, or a RunError naming the process that has it.

    An advisory flock on <run>/.lock: released when the process ends, however it ends, so a
    killed run never leaves a stale lock behind. This process may take a run again (a resume in
    the same process, as the tests and a grid do).
    """
    run_dir = Path(run_dir).absolute()
    if run_dir in _HELD:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 1024, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunError(
            f"{run_dir}: in use by {holder}; wait for it to end, or train into another directory"
        ) from None
    since = dt.datetime.now().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
    _HELD[run_dir] = fd


def unlock(run_dir: str | Path) -> None:
    fd = _HELD.pop(Path(run_dir).absolute(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


# ------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    status: str  # "finished", "failed" or PREEMPTED
    reason: str  # "early_stop", "max_epochs" or the error
    best_epoch: int = 0
    best_val_loss: float = math.nan
    epochs: int = 0


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(run_dir: str | Path) -> bool:
    status = read_status(run_dir)
    return bool(status and status.get("status") == "finished")


def write_status(run_dir: str | Path, status: dict[str, Any]) -> None:
    write_json(Path(run_dir) / STATUS, status)


def clear_results(run_dir: str | Path) -> None:
    """Remove status.json and metrics.json: a run (re)starting training has neither yet."""
    for name in (STATUS, METRICS):
        (Path(run_dir) / name).unlink(missing_ok=True)


def result_of(run_dir: str | Path) -> RunResult | None:
    """The result a run's status.json records (None: no status yet)."""
    status = read_status(run_dir)
    if status is None:
        return None
    if status.get("status") != "finished":
        return RunResult(Path(run_dir), status.get("status", "failed"), status.get("message", ""))
    return RunResult(
        Path(run_dir),
        "finished",
        status.get("reason", ""),
        status.get("best_epoch", 0),
        status.get("best_val_loss", math.nan),
        status.get("epochs", 0),
    )


# ------------------------------------------------------------------------------------ config


def write_config(run_dir: str | Path, config: Config, resume: bool) -> None:
    """config.yaml; a resumed run must have been started with the same (computing) settings."""
    path = Path(run_dir) / CONFIG
    new = config_lib.to_dict(config)
    if resume and path.is_file():
        old = config_lib.to_dict(config_lib.load(path))
        changed = config_lib.changed_settings(old, new, RESUMABLE_CHANGES)
        if changed:
            raise ValueError(
                f"{path}: cannot resume with different settings {sorted(changed)}; start a new "
                "run directory instead"
            )
    path.write_text(yaml.safe_dump(new, sort_keys=False))


def read_config(run_dir: str | Path) -> Config:
    return config_lib.load(Path(run_dir) / CONFIG)


# ------------------------------------------------------------------------------------- files


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_versions(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / VERSIONS
    return read_json(path) if path.is_file() else None


def write_train_counts(run_dir: str | Path, counts: dict[str, float]) -> None:
    write_json(Path(run_dir) / TRAIN_COUNTS, counts)


def read_train_counts(run_dir: str | Path) -> dict[str, float] | None:
    path = Path(run_dir) / TRAIN_COUNTS
    return read_json(path) if path.is_file() else None


def predictions_path(run_dir: str | Path, testset: str) -> Path:
    return Path(run_dir) / f"{PREDICTIONS_PREFIX}{testset}.parquet"


def prediction_files(run_dir: str | Path) -> list[Path]:
    """The predictions-<testset>.parquet files of a run, sorted."""
    return sorted(Path(run_dir).glob(f"{PREDICTIONS_PREFIX}*.parquet"))


def testset_of(path: str | Path) -> str:
    """'nih' from 'predictions-nih.parquet'."""
    stem = Path(path).stem
    return stem.removeprefix(PREDICTIONS_PREFIX).removeprefix("predictions") or "test"


def read_history(path: str | Path) -> Any:
    """history.csv as a pandas frame (empty cells NaN); an error names a file without the
    columns train.history writes. A file written before val_auroc existed gets it as NaN."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / HISTORY
    frame = pd.read_csv(path)
    missing = [c for c in HISTORY_REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    for column in HISTORY_COLUMNS:
        if column not in frame.columns:
            frame[column] = float("nan")
    return frame


def epoch_rows(path: str | Path) -> Any:
    """Only the epoch-end rows of a history.csv (those with a validation loss)."""
    frame = read_history(path)
    return frame[frame["val_loss"].notna()].reset_index(drop=True)
