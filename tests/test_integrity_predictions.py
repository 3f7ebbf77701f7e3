"""Predictions checked before they are scored (issue 13, item 4): each fault of the fault trial
injected into a run's predictions-<testset>.parquet, and the error of `qcxr evaluate` and
`qcxr report` that names the run's file and the row, id or column."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.cli import main
from qcxr.data.datasets import NIHCXRLT, study_paths
from qcxr.evaluate import metrics as M
from qcxr.evaluate.report import write_report
from qcxr.train.predictions import write_predictions
from test_integrity_features import NAMES, SIZES, write_study


def write_run(experiment: Path, study: Path | None, head: str = "cdl", seed: int = 0) -> Path:
    """A run whose config names `study` and whose NIH test predictions are sound."""
    config = config_lib.from_dict(
        {"data": {"study": str(study) if study else ""}, "model": {"head": head},
         "train": {"seed": seed}}
    )  # fmt: skip
    run = rundir.run_path(experiment, "cxr8", head, seed)
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text(yaml.safe_dump(config_lib.to_dict(config)))
    paths = study_paths(study or write_study(experiment / "study"))
    test = NIHCXRLT(paths.nih_csv["test"], paths.nih_images, "cxr8", check_files=False)
    rng = np.random.default_rng(seed + len(head))
    logits = 2 * (2 * test.labels - 1) + rng.normal(size=test.labels.shape)
    probs = 1 / (1 + np.exp(-logits))
    write_predictions(rundir.predictions_path(run, "nih"), test.ids, probs, test.labels, NAMES)
    return run


@pytest.fixture
def run(tmp_path) -> Path:
    study = write_study(tmp_path / "study")
    return write_run(tmp_path / "exp", study)


def predictions(run: Path) -> tuple[Path, pd.DataFrame]:
    path = rundir.predictions_path(run, "nih")
    return path, pd.read_parquet(path)


def evaluate_error(run: Path, capsys) -> str:
    """`qcxr evaluate RUN` fails (rc 1) and writes no metrics.json; its error line."""
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 1
    assert not (run / rundir.METRICS).exists()
    return capsys.readouterr().err


def test_sound_predictions_are_scored(run):
    result = M.write_metrics(run)
    assert result["testsets"]["nih"]["n_images"] == SIZES["test"]
    assert result["testsets"]["nih"]["warnings"] == []


@pytest.mark.parametrize("value", [1.7, -0.3])
def test_probabilities_outside_0_1_are_an_error(run, capsys, value):
    path, frame = predictions(run)
    frame.loc[7, "p:Mass"] = value
    frame.to_parquet(path)
    err = evaluate_error(run, capsys)
    assert f"{path}: probability {value:g} in row 7 (id 'test0007.png'), column 'p:Mass'" in err
    assert "outside [0, 1] (1 value(s) outside" in err


def test_logits_stored_instead_of_probabilities_are_an_error(run):
    path, frame = predictions(run)
    probs = frame.filter(like="p:").to_numpy()
    frame[frame.filter(like="p:").columns] = np.log(probs / (1 - probs))
    frame.to_parquet(path)
    with pytest.raises(ValueError) as err:
        M.write_metrics(run)
    assert str(err.value).startswith(f"{path}: probability ")
    assert "not logits" in str(err.value)


def test_a_nan_probability_is_an_error(run):
    path, frame = predictions(run)
    frame.loc[3, "p:Nodule"] = np.nan
    frame.to_parquet(path)
    with pytest.raises(ValueError) as err:
        M.write_metrics(run)
    assert str(err.value) == (
        f"{path}: non-finite probability nan in row 3 (id 'test0003.png'), column 'p:Nodule'"
    )


def test_truth_other_than_0_1_nan_names_row_and_column(run):
    path, frame = predictions(run)
    frame.loc[2, "y:Mass"] = 0.5
    frame.to_parquet(path)
    with pytest.raises(ValueError) as err:
        M.write_metrics(run)
    assert f"{path}: truth columns must be 0, 1 or NaN; found [0.5]" in str(err.value)
    assert "row 2 (id 'test0002.png'), column 'y:Mass'" in str(err.value)


def test_a_duplicated_id_is_an_error(run):
    path, frame = predictions(run)
    frame.loc[9, "id"] = frame.loc[4, "id"]
    frame.to_parquet(path)
    with pytest.raises(ValueError) as err:
        M.write_metrics(run)
    assert str(err.value).startswith(f"{path}: id 'test0004.png' occurs on rows [4, 9]")


def test_an_id_absent_from_the_label_file_is_an_error_with_one_run(run, capsys):
    path, frame = predictions(run)
    frame.loc[11, "id"] = "ghost.png"
    frame.to_parquet(path)
    csv = study_paths(run.parents[3] / "study").nih_csv["test"]
    err = evaluate_error(run, capsys)
    assert f"{path}: id 'ghost.png' (row 11) is not in {csv}, the test set's label file" in err


def test_truth_that_is_not_the_label_files_is_an_error(run):
    path, frame = predictions(run)
    frame["y:Mass"] = np.roll(frame["y:Mass"].to_numpy(), 1)  # a truth column shifted by a row
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=r"y:Mass of id 'test\d{4}\.png' \(row \d+\) is"):
        M.write_metrics(run)


def test_fewer_images_than_the_label_file_are_noted(run):
    path, frame = predictions(run)
    frame.iloc[:50].to_parquet(path)
    notes = M.write_metrics(run)["testsets"]["nih"]["warnings"]
    assert any(f"{path}: scored on 50 of the 60 images of" in note for note in notes)


def test_without_a_study_the_ids_are_not_compared(tmp_path):
    run = write_run(tmp_path / "exp", None)
    path, frame = predictions(run)
    frame.loc[0, "id"] = "ghost.png"
    frame.to_parquet(path)
    assert M.write_metrics(run)["testsets"]["nih"]["n_images"] == SIZES["test"]


def test_report_checks_predictions_even_with_current_metrics(tmp_path, capsys):
    """A report reads every run's predictions, also when metrics.json is newer than them."""
    study = write_study(tmp_path / "study")
    runs = [write_run(tmp_path / "exp", study, head, seed) for head in ("cdl", "dqc")
            for seed in (0, 1)]  # fmt: skip
    for run in runs:
        M.write_metrics(run)
    path, frame = predictions(runs[2])
    stat = path.stat()
    frame.loc[5, "p:Atelectasis"] = 1.7
    frame.to_parquet(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` would leave it
    with pytest.raises(ValueError, match=rf"{path}: probability 1.7 in row 5"):
        write_report(tmp_path / "exp", resamples=0)
    assert main(["report", str(tmp_path / "exp"), "--bootstrap", "0"]) == 1
    assert str(path) in capsys.readouterr().err
