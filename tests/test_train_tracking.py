"""Tracking (qcxr.train.tracking): TensorBoard event files read back with TensorBoard's own
reader, an MLflow run read back with MLflow's client, the per-epoch validation AUROC against
scikit-learn, resume, failures that only warn, and training that tracking does not change."""

from __future__ import annotations

import errno
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.train import tracking
from qcxr.train.checkpoint import RunCheckpoints
from qcxr.train.frozen import train_frozen
from qcxr.train.history import average_ranks, mean_auroc
from qcxr.train.model import build_model
from qcxr.train.runbook import RunBook
from qcxr.train.trainer import StepClock
from test_train_support import _with_seed, assert_same_run, config, frozen_data

SECTIONS = {
    "model": {"head": "cdl"},
    "train": {"max_epochs": 3, "schedule": "cosine", "learning_rate": 1e-2, "vmap_seeds": "yes"},
}
SEEDS = (0, 1)
N_TRAIN, BATCH = 320, 32  # 10 steps per epoch
STEP_TAGS = {"train/loss", "train/learning_rate", "train/step_time"}
EPOCH_TAGS = {"train/epoch_loss", "val/loss", "val/auroc"}
EPOCH_COLUMNS = {"train/epoch_loss": "train_loss", "val/loss": "val_loss", "val/auroc": "val_auroc"}


def data():
    return frozen_data(n_train=N_TRAIN, n_val=128, n_test=64)


def train(root, tracking_kind: str, seeds=SEEDS, hook=None, resume=True, **train_settings):
    """Frozen runs of SECTIONS in the grid layout under `root`; their run directories."""
    sections = {**SECTIONS, "train": {**SECTIONS["train"], **train_settings}}
    sections["train"]["tracking"] = tracking_kind
    cfgs = [_with_seed(config(**sections), s) for s in seeds]
    dirs = [rundir.config_run_path(root, c) for c in cfgs]
    train_frozen(cfgs, dirs, data(), progress=False, on_batch=hook, resume=resume)
    return dirs


def event_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of a run's TensorBoard files, read by TensorBoard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / rundir.TENSORBOARD), size_guidance={"scalars": 0})
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def steps_and_values(frame, column, dtype=np.float32) -> list[tuple[int, float]]:
    return [(int(s), float(dtype(v))) for s, v in zip(frame["step"], frame[column], strict=True)]


def step_rows(run_dir):
    history = rundir.read_history(run_dir)
    return history[history["val_loss"].isna()]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Two seeds trained together with `tracking: mlflow` (MLflow's default local store), and
    the same without tracking: (mlflow run dirs, untracked run dirs)."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
        with_mlflow = train(root / "exp-mlflow", "mlflow")
    untracked = train(root / "exp-none", "none")
    return with_mlflow, untracked


def test_mean_auroc_equals_scikit_learn_with_ties_and_unknown_truth():
    rng = np.random.default_rng(3)
    probs = np.round(rng.random((300, 5)), 1)  # a tenth apart: many ties
    labels = (rng.random((300, 5)) < 0.3).astype(np.float64)
    labels[rng.random((300, 5)) < 0.2] = np.nan  # unknown truth, per label
    labels[:, 3] = np.where(np.isnan(labels[:, 3]), np.nan, 1.0)  # one class among known rows
    expected = []
    for i in range(5):
        known = ~np.isnan(labels[:, i])
        if len(set(labels[known, i])) == 2:
            expected.append(roc_auc_score(labels[known, i], probs[known, i]))
    assert len(expected) == 4
    assert mean_auroc(probs, labels) == pytest.approx(np.mean(expected), abs=1e-12)
    assert math.isnan(mean_auroc(probs[:, 3:4], labels[:, 3:4]))
    from scipy.stats import rankdata

    np.testing.assert_array_equal(average_ranks(probs[:, 0]), rankdata(probs[:, 0]))


def test_step_clock_leaves_out_a_call_that_compiled():
    f = jax.jit(lambda x: jnp.sin(x) * 2.5 + 0.125)  # a function no other test compiles
    times = []
    for _ in range(2):
        with StepClock() as clock:
            np.asarray(f(jnp.ones(7)))
        times.append(clock.seconds)
    assert times[0] is None and times[1] is not None and times[1] > 0


def test_tensorboard_files_read_back_equal_history(tracked):
    for run in tracked[0]:
        scalars = event_scalars(run)
        assert set(scalars) == STEP_TAGS | EPOCH_TAGS
        steps = step_rows(run)
        assert scalars["train/loss"] == steps_and_values(steps, "train_loss")
        epochs = rundir.epoch_rows(run)
        assert len(epochs) == 3 and epochs["val_auroc"].between(0, 1).all()
        for tag, column in EPOCH_COLUMNS.items():
            assert scalars[tag] == steps_and_values(epochs, column)
        # The learning rate of each update, by optax's own cosine schedule over 3 x 10 steps.
        schedule = optax.cosine_decay_schedule(1e-2, 3 * N_TRAIN // BATCH)
        rates = scalars["train/learning_rate"]
        assert [s for s, _ in rates] == list(steps["step"])
        want = [float(schedule(s - 1)) for s in steps["step"]]
        np.testing.assert_allclose([v for _, v in rates], want, rtol=1e-5, atol=1e-9)  # float32
        assert rates[0][1] == pytest.approx(1e-2) and rates[-1][1] < 1e-3  # it decays
        # Step times: positive; the later epochs' scans (no compilation) all have theirs.
        timed = dict(scalars["train/step_time"])
        assert set(timed) <= set(steps["step"]) and all(v > 0 for v in timed.values())
        assert set(range(11, 31)) <= set(timed)


def test_val_auroc_is_scikit_learns_on_the_best_checkpoint(tracked):
    d = data()
    for run in tracked[0]:
        variables, meta = RunCheckpoints(run).restore_best()
        cfg = rundir.read_config(run)
        probs = np.asarray(jax.nn.sigmoid(build_model(cfg).logits(variables, d.val.inputs)))
        reference = np.mean(
            [
                roc_auc_score(d.val.labels[:, i], probs[:, i])
                for i in range(d.val.labels.shape[1])
                if len(set(d.val.labels[:, i])) == 2
            ]
        )
        epochs = rundir.epoch_rows(run)
        best = epochs[epochs["epoch"] == meta["epoch"]]["val_auroc"].item()
        assert best == pytest.approx(reference, abs=1e-4)


def test_tracking_on_and_off_train_identically(tracked):
    for run, plain in zip(*tracked, strict=True):
        assert_same_run(run, plain)
        assert not (plain / rundir.TENSORBOARD).exists() and not (plain / rundir.TRACKING).exists()


def mlflow_run(run_dir):
    from mlflow.tracking import MlflowClient

    record = json.loads((run_dir / rundir.TRACKING).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    return client, client.get_run(record["run_id"]), record


def metric_history(client, run_id, tag) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, tag)]


def test_mlflow_run_reads_back_with_its_client(tracked, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for run in tracked[0]:
        client, mlrun, record = mlflow_run(run)
        experiment = run.parents[2]
        assert record["tracking_uri"] == (experiment / "mlruns").as_uri()
        assert client.get_experiment(mlrun.info.experiment_id).name == "exp-mlflow"
        assert mlrun.info.run_name == str(run.relative_to(experiment))
        assert mlrun.info.status == "FINISHED"
        flat = config_lib.flat(config_lib.to_dict(rundir.read_config(run)))
        assert mlrun.data.params == {k: str(v) for k, v in flat.items()}
        steps, epochs = step_rows(run), rundir.epoch_rows(run)
        loss = metric_history(client, mlrun.info.run_id, "train/loss")
        assert loss == steps_and_values(steps, "train_loss", np.float64)
        for tag, column in EPOCH_COLUMNS.items():
            got = metric_history(client, mlrun.info.run_id, tag)
            assert got == steps_and_values(epochs, column, np.float64)
        rates = metric_history(client, mlrun.info.run_id, "train/learning_rate")
        assert [s for s, _ in rates] == list(steps["step"])
        files = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
        assert {"config.yaml", "history.csv", "status.json"} <= files


def test_log_report_attaches_the_report_to_each_recorded_run(tracked, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "report.html").write_text("<html></html>")
    (report / "figures" / "auroc.png").write_bytes(b"\x89PNG")
    untracked = tracked[1][0]
    assert tracking.log_report([*tracked[0], untracked], report) == 2
    for run in tracked[0]:
        client, mlrun, _ = mlflow_run(run)
        files = {a.path for a in client.list_artifacts(mlrun.info.run_id, "report")}
        assert files == {"report/report.html", "report/figures"}
        inner = client.list_artifacts(mlrun.info.run_id, "report/figures")
        assert [a.path for a in inner] == ["report/figures/auroc.png"]


class Stop(Exception):
    pass


def test_resumed_runs_track_what_an_uninterrupted_run_tracks(tmp_path, monkeypatch):
    """Stopped mid-epoch after a checkpoint (events beyond it already written), then resumed:
    TensorBoard reads back the scalars of an uninterrupted run and the MLflow run is the same
    one, each step once."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)

    def stop(cfg, epoch, position, ids, views):
        if (epoch, position) == (1, 6):
            raise Stop

    with pytest.raises(Stop):
        train(tmp_path / "exp", "mlflow", checkpoint_every=4, hook=stop)
    killed = rundir.config_run_path(tmp_path / "exp", config(**SECTIONS))
    first_id = json.loads((killed / rundir.TRACKING).read_text())["mlflow"]["run_id"]
    assert len(list((killed / rundir.TENSORBOARD).iterdir())) == 1
    assert RunCheckpoints(killed).latest_meta()["step"] == 14
    assert max(s for s, _ in event_scalars(killed)["train/loss"]) == 17  # beyond the checkpoint
    resumed = train(tmp_path / "exp", "mlflow", checkpoint_every=4)
    reference = train(tmp_path / "ref", "tensorboard", checkpoint_every=4)
    for run, ref in zip(resumed, reference, strict=True):
        assert len(list((run / rundir.TENSORBOARD).iterdir())) == 2
        got, want = event_scalars(run), event_scalars(ref)
        assert set(got) == set(want)
        for tag in set(want) - {"train/step_time"}:
            assert got[tag] == want[tag], tag
        client, mlrun, record = mlflow_run(run)
        if run == killed:
            assert record["run_id"] == first_id
        assert mlrun.info.status == "FINISHED"
        loss = metric_history(client, mlrun.info.run_id, "train/loss")
        assert loss == steps_and_values(step_rows(run), "train_loss", np.float64)
        assert [s for s, _ in loss] == list(range(1, 31))


def test_tracking_failures_are_one_warning_each_and_training_goes_on(
    tracked, tmp_path, monkeypatch, capsys
):
    """The event files' disk fills mid-run and the MLflow server is down: one warning line
    each, and the run trains to the same result as an untracked one."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    written = tracking.TensorBoardWriter.scalars
    calls: dict[int, int] = {}

    def disk_fills(self, step, values):
        calls[id(self)] = calls.get(id(self), 0) + 1
        if calls[id(self)] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        written(self, step, values)

    monkeypatch.setattr(tracking.TensorBoardWriter, "scalars", disk_fills)
    runs = train(tmp_path / "exp", "mlflow")
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    for run, plain in zip(runs, tracked[1], strict=True):
        mine = [w for w in warnings if f"{run}:" in w]
        assert len(mine) == 2, err[-3000:]
        assert any("mlflow tracking failed" in w for w in mine)
        assert any("tensorboard tracking failed (OSError" in w and "No space" in w for w in mine)
        assert_same_run(run, plain)
    assert list(calls.values()) == [6, 6]  # a failed writer is dropped, not called again


def test_mlflow_missing_is_a_clear_error_before_the_run_is_touched(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    cfg = config(train={"tracking": "mlflow"})
    with pytest.raises(RuntimeError, match=r"pip install 'qcxr\[tracking\]'"):
        RunBook(cfg, tmp_path / "run", resume=False, steps_per_epoch=4)
    assert not (tmp_path / "run").exists()


def test_the_mlflow_experiment_is_the_grid_directory_or_the_runs_parent(tmp_path):
    grid_run = rundir.run_path(tmp_path / "exp", "cxr8", "dqc", 3)
    assert tracking.experiment_dir(grid_run) == (tmp_path / "exp").absolute()
    assert tracking.experiment_dir(tmp_path / "one-run") == tmp_path.absolute()
