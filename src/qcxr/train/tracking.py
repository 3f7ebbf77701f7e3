"""What a run reports while it trains: TensorBoard event files (every run unless
train.tracking is "none") and an MLflow run (train.tracking: mlflow), behind one interface.

Scalars, the same names in both, each at the global step of history.csv:
  train/loss           per step: the batch's loss (history.csv step rows' train_loss)
  train/learning_rate  per step: the rate the optax schedule gave that step's update,
                       schedule(step - 1) (optax counts updates from 0)
  train/step_time      per step: wall seconds of the jitted call that made the step, until its
                       results were on the host (frozen mode: a scan of several steps, divided
                       evenly); left out for a call during which JAX compiled (trainer.StepClock)
  train/epoch_loss     per epoch: the mean batch loss (epoch rows' train_loss)
  val/loss, val/auroc  per epoch: epoch rows' val_loss and val_auroc
TensorBoard: <run>/tensorboard/, written synchronously with tensorboardX's own event writer (its
SummaryWriter queues events for a thread: a flush does not wait for the queue, and a write that
fails there, e.g. a full disk, kills the thread and blocks the next put for good). Events are
flushed before each checkpoint save; a new writer starts with a session-start event at the
step after the checkpoint it resumes from (what SummaryWriter(purge_step=...) writes), so
TensorBoard's readers drop the events a killed process wrote after it.
MLflow: one run per training run (experiment: the experiment directory's name; run name: the
run's path in it; params: the config's dotted keys), at MLFLOW_TRACKING_URI or else the file
store <experiment>/mlruns (tracking_uri). Metrics are sent after each checkpoint save, only up
to its step, so the MLflow run never holds a step a resume repeats; at the end the run's files
(config.yaml, history.csv, status.json, metrics.json when there) become artifacts and the run
is FINISHED, KILLED (preempted) or FAILED. <run>/tracking.json records the run id and URI: a
resume continues that run, log_artifacts/log_report attach files to it later.
A writer that fails is one warning line and is dropped; training goes on and computes the same
(tracking reads host values only; trainer.compiled shares one compilation across its settings).
Only process 0 of a multi-host job writes.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.config import Config
from qcxr.train.state import learning_rate

INSTALL_HINT = "pip install 'qcxr[tracking]'"
ARTIFACTS = (rundir.CONFIG, rundir.HISTORY, rundir.METRICS, rundir.STATUS)
RATE_BLOCK = 4096  # learning rates computed together (Tracker.rate)
MLFLOW_STATUS = {"finished": "FINISHED", rundir.PREEMPTED: "KILLED"}  # else FAILED


def warn(run_dir: Path, what: str, err: BaseException, then: str = "training goes on") -> None:
    """One line: what failed, why (shortened), and that the work goes on without it."""
    text = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    print(
        f"warning: {run_dir}: {what} failed ({text}); {then} without it",
        file=sys.stderr,
        flush=True,
    )


def require_mlflow() -> Any:
    """The mlflow package, or an error saying how to install it."""
    try:
        import mlflow  # noqa: F401  (lazy: only `train.tracking: mlflow` needs it)
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise RuntimeError(
            f"train.tracking is mlflow but mlflow is not installed ({err}); install it with "
            f"{INSTALL_HINT}, or choose --tracking tensorboard"
        ) from None
    return MlflowClient


# ----------------------------------------------------------------------------- TensorBoard


def _event_writer() -> tuple:
    """tensorboardX's event writer and protos. Importing tensorboardX imports torch when it is
    installed (3 s, for its SummaryWriter's tensors, which the event writer never uses): torch
    is kept out of that one import, unless this process has already imported it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails at once
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
    finally:
        if hide:
            del sys.modules["torch"]
    return EventsWriter, Event, SessionLog, Summary


class TensorBoardWriter:
    name = "tensorboard"

    def __init__(self, run_dir: Path, purge_step: int):
        EventsWriter, Event, SessionLog, Summary = _event_writer()
        directory = run_dir / rundir.TENSORBOARD
        directory.mkdir(parents=True, exist_ok=True)
        # Names carry time and host; the part number keeps two writers of one second apart and
        # in order (readers take the files sorted by name).
        part = len(list(directory.glob("*tfevents*")))
        self.events = EventsWriter(str(directory / "events"), f".{part:04d}")
        self.event, self.summary = Event, Summary
        start = SessionLog(status=SessionLog.START)
        self.events.write_event(Event(wall_time=time.time(), step=purge_step, session_log=start))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event holding every value of the step (a record each costs ~4x the time)."""
        points = [self.summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]
        event = self.event(wall_time=time.time(), step=step, summary=self.summary(value=points))
        self.events.write_event(event)

    def flush(self) -> None:
        self.events.flush()

    def saved(self, step: int) -> None:
        pass

    def close(self, status: str | None) -> None:
        self.events.close()


# ---------------------------------------------------------------------------------- MLflow


def tracking_uri(experiment_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a file store inside the experiment directory.

    mlflow 3.x refuses a file store unless MLFLOW_ALLOW_FILE_STORE is true ("maintenance
    mode"); its recommended sqlite store needs SQLAlchemy, which mlflow-skinny (the `tracking`
    extra) lacks. So the default is the file store, allowed for this process unless the user
    set the variable."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (experiment_dir.absolute() / "mlruns").as_uri()


def experiment_dir(run_dir: Path) -> Path:
    """The grid's experiment directory of a run named seed-<k>; the parent of another."""
    run_dir = run_dir.absolute()
    return rundir.experiment_of(run_dir) if rundir.seed_of(run_dir) is not None else run_dir.parent


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / rundir.TRACKING
    return rundir.read_json(path).get("mlflow") if path.is_file() else None


def experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another run of the grid created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def config_params(config: Config) -> list[Any]:
    from mlflow.entities import Param

    flat = config_lib.flat(config_lib.to_dict(config))
    return [Param(key, str(value)[:6000]) for key, value in flat.items()]


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MlflowWriter:
    name = "mlflow"

    def __init__(self, run_dir: Path, config: Config, resumed: bool):
        self.run_dir = run_dir
        record = read_record(run_dir) if resumed else None
        if record is not None:  # the run this one continues
            self.uri, self.run_id = record["tracking_uri"], record["run_id"]
            if self.uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self.client = require_mlflow()(tracking_uri=self.uri)
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = experiment_dir(run_dir)
            self.uri = tracking_uri(experiment)
            self.client = require_mlflow()(tracking_uri=self.uri)
            name = str(run_dir.absolute().relative_to(experiment))
            run = self.client.create_run(
                experiment_id(self.client, experiment.name or "qcxr"),
                run_name=name,
                tags={"qcxr.run_dir": str(run_dir.absolute())},
            )
            self.run_id = run.info.run_id
            for part in batches(config_params(config), 100):
                self.client.log_batch(self.run_id, params=part)
            record = {"run_id": self.run_id, "tracking_uri": self.uri, "experiment": name}
            rundir.write_json(run_dir / rundir.TRACKING, {"mlflow": record})
        self.pending: list[Any] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending.extend(Metric(tag, float(v), now, step) for tag, v in values.items())

    def flush(self) -> None:
        pass  # metrics leave with the checkpoint they belong to: saved()

    def saved(self, step: int) -> None:
        ready = [m for m in self.pending if m.step <= step]
        self.pending = [m for m in self.pending if m.step > step]
        for part in batches(ready, 1000):
            self.client.log_batch(self.run_id, metrics=part)

    def close(self, status: str | None) -> None:
        for name in ARTIFACTS:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status or "", "FAILED"))


# -------------------------------------------------------------------------------- Tracker

_OPEN: weakref.WeakSet = weakref.WeakSet()


class Tracker:
    """A run's writers; each call goes to every writer still working."""

    def __init__(self, run_dir: Path, writers: list[Any], schedule: Callable[[Any], Any]):
        self.run_dir, self.writers, self.schedule = run_dir, writers, schedule
        self.rates, self.rate_block = np.zeros(0), -1
        self.saved_step = 0
        self.closed = False
        if writers:
            _OPEN.add(self)

    def _each(self, method: str, *args: Any) -> None:
        for writer in list(self.writers):
            try:
                getattr(writer, method)(*args)
            except Exception as err:  # a tracking failure must never stop training
                warn(self.run_dir, f"{writer.name} tracking", err)
                self.writers.remove(writer)

    def rate(self, step: int) -> float:
        """The learning rate of the update that made `step` (1-based): schedule(step - 1),
        evaluated a block of RATE_BLOCK steps at a time (per step, an optax schedule called
        eagerly costs ~1 ms in op dispatches)."""
        block, offset = divmod(step - 1, RATE_BLOCK)
        if block != self.rate_block:
            counts = np.arange(block * RATE_BLOCK, (block + 1) * RATE_BLOCK)
            rates = np.asarray(self.schedule(counts), np.float64)
            self.rates, self.rate_block = np.broadcast_to(rates, counts.shape), block
        return float(self.rates[offset])

    def step(self, step: int, train_loss: float, seconds: float | None) -> None:
        if not self.writers:
            return
        values = {"train/loss": train_loss, "train/learning_rate": self.rate(step)}
        if seconds is not None:
            values["train/step_time"] = seconds
        self._each("scalars", step, values)

    def epoch(self, step: int, train_loss: float, val_loss: float, val_auroc: float) -> None:
        values = {"train/epoch_loss": train_loss, "val/loss": val_loss, "val/auroc": val_auroc}
        self._each("scalars", step, values)

    def flush(self) -> None:
        """Before a checkpoint save: what was recorded reaches the disk."""
        self._each("flush")

    def saved(self, step: int) -> None:
        """After a checkpoint save at `step`."""
        self.saved_step = step
        self._each("saved", step)

    def close(self, status: str | None) -> None:
        """At the end: everything flushed, MLflow gets the run's files and its final status
        (None: the process ends without the run having closed, i.e. it failed)."""
        if self.closed:
            return
        self.closed = True
        self._each("flush")
        self._each("close", status)
        self.writers = []


@atexit.register
def _close_open() -> None:
    for tracker in list(_OPEN):
        tracker.close(None)


def open_writers(config: Config, run_dir: Path, resumed: bool, purge_step: int) -> list[Any]:
    """The writers train.tracking asks for; one that cannot start is a warning, not an error."""
    kind = config.train.tracking
    if kind == "none":
        return []
    openers: list[tuple[str, Callable[[], Any]]] = [
        ("tensorboard tracking", lambda: TensorBoardWriter(run_dir, purge_step))
    ]
    if kind == "mlflow":
        require_mlflow()  # missing: an error before training, naming the install command
        openers.append(("mlflow tracking", lambda: MlflowWriter(run_dir, config, resumed)))
    writers = []
    for what, opener in openers:
        try:
            writers.append(opener())
        except Exception as err:
            warn(run_dir, what, err)
    return writers


def open_tracker(
    config: Config,
    run_dir: str | Path,
    *,
    step: int,
    resumed: bool,
    steps_per_epoch: int,
    main: bool = True,
) -> Tracker:
    """The tracker of a run that stands at `step` (0: from the start). Only process 0 of a
    multi-host job writes (`main`)."""
    run_dir = Path(run_dir)
    writers = open_writers(config, run_dir, resumed, step + 1) if main else []
    schedule = learning_rate(config.train, steps_per_epoch)
    return Tracker(run_dir, writers, schedule)


# ------------------------------------------------------------------- files after training


def _client_of(record: dict[str, Any]) -> Any:
    if record["tracking_uri"].startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return require_mlflow()(tracking_uri=record["tracking_uri"])


def log_artifacts(run_dir: str | Path) -> bool:
    """Attach a run's files (config, history, metrics.json, status) to its recorded MLflow run
    again, e.g. after the caller wrote metrics.json; False when none is recorded or it failed."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record is None:
        return False
    try:
        client = _client_of(record)
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                client.log_artifact(record["run_id"], str(run_dir / name))
    except Exception as err:
        warn(run_dir, "mlflow artifact upload", err, "the run goes on")
        return False
    return True


def log_report(run_dirs: list[Path], report_dir: Path) -> int:
    """Attach a report's files (under "report/") and each run's own files to every run that has
    an MLflow run recorded; how many runs got them. A failure is a warning per run."""
    attached = 0
    for run_dir in map(Path, run_dirs):
        record = read_record(run_dir)
        if record is None or not log_artifacts(run_dir):
            continue
        try:
            _client_of(record).log_artifacts(record["run_id"], str(report_dir), "report")
        except Exception as err:
            warn(run_dir, "mlflow report upload", err, "the report goes on")
            continue
        attached += 1
    return attached
