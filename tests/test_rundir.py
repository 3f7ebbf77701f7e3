"""qcxr.rundir: the run directory's layout, status, config and history files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.rundir import RunResult


def test_run_path_is_experiment_task_head_seed(tmp_path):
    cfg = config_lib.from_dict({"task": "cxr14", "model": {"head": "dqc"}, "train": {"seed": 3}})
    path = rundir.config_run_path(tmp_path / "paper", cfg)
    assert path == tmp_path / "paper" / "cxr14" / "dqc" / "seed-3"
    assert rundir.experiment_of(path) == tmp_path / "paper"


def test_status_round_trip_and_results(tmp_path):
    assert rundir.read_status(tmp_path) is None and rundir.result_of(tmp_path) is None
    assert not rundir.is_finished(tmp_path)
    done = {"status": "finished", "reason": "early_stop", "best_epoch": 4, "best_val_loss": 0.25,
            "epochs": 9, "steps": 90}  # fmt: skip
    rundir.write_status(tmp_path, done)
    assert json.loads((tmp_path / "status.json").read_text()) == done
    assert rundir.is_finished(tmp_path)
    assert rundir.result_of(tmp_path) == RunResult(tmp_path, "finished", "early_stop", 4, 0.25, 9)
    failed = {"status": "failed", "reason": "non-finite loss", "message": "loss is nan"}
    rundir.write_status(tmp_path, failed)
    assert not rundir.is_finished(tmp_path)
    result = rundir.result_of(tmp_path)
    assert (result.status, result.reason, result.epochs) == ("failed", "loss is nan", 0)
    assert math.isnan(result.best_val_loss)
    (tmp_path / "metrics.json").write_text("{}")
    rundir.clear_results(tmp_path)
    assert not (tmp_path / "status.json").exists() and not (tmp_path / "metrics.json").exists()


def test_write_config_refuses_a_resume_with_other_computing_settings(tmp_path):
    cfg = config_lib.from_dict({"train": {"learning_rate": 1e-3, "max_epochs": 5}})
    rundir.write_config(tmp_path, cfg, resume=False)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config_lib.to_dict(cfg)
    assert rundir.read_config(tmp_path) == cfg
    # Settings that do not change what is computed may change on resume ...
    longer = config_lib.from_dict({"train": {"learning_rate": 1e-3, "max_epochs": 9}})
    rundir.write_config(tmp_path, longer, resume=True)
    assert rundir.read_config(tmp_path).train.max_epochs == 9
    # ... others are an error naming the file and the keys.
    other = config_lib.from_dict({"train": {"learning_rate": 3e-3, "max_epochs": 9}})
    with pytest.raises(ValueError, match=r"config\.yaml.*train\.learning_rate"):
        rundir.write_config(tmp_path, other, resume=True)
    assert rundir.read_config(tmp_path).train.learning_rate == 1e-3  # left as it was
    rundir.write_config(tmp_path, other, resume=False)  # a fresh run overwrites
    assert rundir.read_config(tmp_path).train.learning_rate == 3e-3


def test_prediction_files_and_testset_names(tmp_path):
    for name in ("mimic", "nih"):
        rundir.predictions_path(tmp_path, name).write_text("")
    (tmp_path / "other.parquet").write_text("")
    files = rundir.prediction_files(tmp_path)
    assert [p.name for p in files] == ["predictions-mimic.parquet", "predictions-nih.parquet"]
    assert [rundir.testset_of(p) for p in files] == ["mimic", "nih"]


def test_history_reader_is_strict_and_epoch_rows_are_the_validated_ones(tmp_path):
    rows = [(1, 1, 0.7, None, None, None), (1, 2, 0.6, None, None, None)]
    rows.append((1, 2, 0.65, 0.62, 1.5, 0.71))
    frame = pd.DataFrame(rows, columns=list(rundir.HISTORY_COLUMNS))
    frame.to_csv(tmp_path / "history.csv", index=False)
    assert len(rundir.read_history(tmp_path)) == 3  # a run directory or the file
    epochs = rundir.epoch_rows(tmp_path / "history.csv")
    assert list(epochs["val_loss"]) == [0.62] and list(epochs["train_loss"]) == [0.65]
    assert list(epochs["val_auroc"]) == [0.71]
    frame.drop(columns=["val_loss"]).to_csv(tmp_path / "history.csv", index=False)
    with pytest.raises(ValueError, match=r"history\.csv: missing column\(s\) \['val_loss'\]"):
        rundir.read_history(tmp_path)


def test_seed_of_reads_the_run_directory_name(tmp_path):
    assert rundir.seed_of(rundir.run_path(tmp_path, "cxr8", "cdl", 12)) == 12
    assert rundir.seed_of(tmp_path / "seed-x") is None
    assert rundir.seed_of(tmp_path / "run-3") is None


def test_a_history_written_before_val_auroc_reads_with_it_nan(tmp_path):
    old = "epoch,step,train_loss,val_loss,epoch_time\n1,1,0.7,,\n1,1,0.7,0.6,2.0\n"
    (tmp_path / "history.csv").write_text(old)
    frame = rundir.read_history(tmp_path)
    assert list(frame.columns) == list(rundir.HISTORY_COLUMNS)
    assert frame["val_auroc"].isna().all() and list(frame["val_loss"].dropna()) == [0.6]
    assert rundir.epoch_rows(tmp_path)["val_auroc"].isna().all()
