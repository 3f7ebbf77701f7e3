"""A model that learned nothing is never reported as a success (qcxr.evaluate.diagnosis).

Runs are built by hand from the project's writers (config.yaml of a built config,
train.predictions, train.history), with no training: a "dead" run predicts 0.2 for every image
and label and its validation loss never moves; a normal run's probabilities follow the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.cli import main
from qcxr.evaluate import diagnosis as D
from qcxr.evaluate.metrics import write_metrics
from qcxr.evaluate.report import write_report
from qcxr.labels import TASKS
from qcxr.rundir import RunResult
from qcxr.train.history import History
from qcxr.train.predictions import write_predictions
from qcxr.train_cli import _print_results

LABELS = list(TASKS["cxr8"])
N_IMAGES = 60


def _truth() -> np.ndarray:
    truth = (np.random.default_rng(0).random((N_IMAGES, len(LABELS))) < 0.35).astype(float)
    truth[0], truth[1] = 1.0, 0.0  # both classes in every label
    return truth


def _write_run(experiment, head, seed, *, dead, mode="frozen", standardize=False):
    config = config_lib.from_dict(
        {
            "task": "cxr8",
            "model": {"head": head},
            "train": {"seed": seed, "mode": mode, "standardize_features": standardize},
        }
    )
    run = rundir.run_path(experiment, config.task, head, seed)
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text(yaml.safe_dump(config_lib.to_dict(config)))
    truth = _truth()
    if dead:
        probs = np.full(truth.shape, 0.2)
        val_losses = [0.6931, 0.6931, 0.6931]
    else:
        noise = np.random.default_rng(seed + 10).normal(size=truth.shape)
        probs = 1 / (1 + np.exp(-(2.0 * (2 * truth - 1) + noise)))
        val_losses = [0.69, 0.55, 0.48]
    ids = [f"img{i}" for i in range(N_IMAGES)]
    write_predictions(rundir.predictions_path(run, "nih"), ids, probs, truth, LABELS)
    history = History(run / rundir.HISTORY)
    history.start(None)
    for epoch, loss in enumerate(val_losses, start=1):
        history.step(epoch, 2 * epoch - 1, loss + 0.01)
        history.epoch(epoch, 2 * epoch, loss + 0.01, loss, 1.0)
    history.flush()
    return run


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnosis") / "exp"
    normal = [_write_run(root, "cdl", seed, dead=False) for seed in (0, 1)]
    dead = [_write_run(root, "dqc", seed, dead=True) for seed in (0, 1)]
    return root, normal, dead


def test_a_dead_run_learned_nothing_with_its_reasons(experiment):
    _, _, dead = experiment
    result = write_metrics(dead[0])
    on_disk = rundir.read_json(dead[0] / rundir.METRICS)["diagnosis"]
    assert on_disk == D.read_diagnosis(dead[0])
    assert result["testsets"]["nih"]["mean"]["auroc"] == pytest.approx(0.5)
    assert on_disk["learned_nothing"] is True
    reasons = " | ".join(on_disk["reasons"])
    assert "constant predictions (every label's std < 1e-06)" in reasons
    assert "validation loss never moved" in reasons
    assert "mean AUROC 0.500" in reasons
    assert on_disk["testsets"]["nih"]["constant_labels"] == len(LABELS)
    assert on_disk["hint"] == D.STANDARDIZE_HINT  # frozen, standardize_features off


def test_a_normal_run_learned_something(experiment):
    _, normal, _ = experiment
    write_metrics(normal[0])
    diagnosis = D.read_diagnosis(normal[0])
    assert diagnosis["learned_nothing"] is False
    assert diagnosis["reasons"] == [] and diagnosis["hint"] is None
    assert D.message(diagnosis) is None


def test_the_hint_is_general_when_standardisation_is_on(tmp_path):
    run = _write_run(tmp_path / "exp", "dqc", 0, dead=True, standardize=True)
    diagnosis = write_metrics(run)["diagnosis"]
    assert diagnosis["learned_nothing"] and diagnosis["hint"] == D.GENERAL_HINT


def test_chance_auroc_alone_is_only_a_signal():
    assert D.chance_signal(0.51) == "mean AUROC 0.510"
    assert D.chance_signal(0.55) is None and D.chance_signal(float("nan")) is None
    probs = np.random.default_rng(0).random((20, 4))
    probs[:, :3] = 0.3  # 3 of 4 labels constant: near-constant
    reason, n = D.constant_signal(probs)
    assert n == 3 and reason.startswith("near-constant predictions (3 of 4")
    probs[:, 1:3] = np.random.default_rng(1).random((20, 2))
    assert D.constant_signal(probs) == (None, 1)


def test_train_and_evaluate_say_so_on_their_last_line(experiment, capsys):
    _, normal, dead = experiment
    for run in (*normal, *dead):
        write_metrics(run)
    results = [RunResult(run, "finished", "max_epochs", 3, 0.69, 3) for run in (normal[1], dead[1])]
    _print_results(results, as_json=False)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"{dead[1]}: finished, but the model learned nothing")
    assert "constant predictions" in out[-1] and "mean AUROC 0.500" in out[-1]
    assert "train.standardize_features: true" in out[-1]
    assert not any("learned nothing" in line and str(normal[1]) in line for line in out)

    assert main(["evaluate", str(normal[1]), str(dead[1])]) == 0  # exit code unchanged
    err = capsys.readouterr().err
    assert f"warning: {dead[1]}: the model learned nothing" in err
    assert str(normal[1]) + ":" not in err


def test_the_report_has_a_box_naming_the_dead_runs(experiment):
    root, normal, dead = experiment
    index = write_report(root, resamples=0)
    page = (root / "summary" / "report.html").read_text()
    assert "id='learned-nothing'" in page
    box = page.split("id='learned-nothing'")[1].split("</div>")[0]
    assert "2 of 4 runs the model learned nothing" in box
    for run in dead:
        assert "/".join(run.parts[-3:]) in box
    for run in normal:
        assert "/".join(run.parts[-3:]) not in box
    assert index["learned_nothing"] == sorted("/".join(r.parts[-3:]) for r in dead)


def test_no_box_when_every_run_learned(tmp_path):
    root = tmp_path / "exp"
    for head in ("cdl", "dqc"):
        for seed in (0, 1):
            _write_run(root, head, seed, dead=False)
    index = write_report(root, resamples=0)
    assert index["learned_nothing"] == []
    assert "learned-nothing" not in (root / "summary" / "report.html").read_text()


def test_a_metrics_json_without_a_diagnosis_still_gets_one_in_the_report(tmp_path):
    root = tmp_path / "exp"
    runs = [_write_run(root, h, s, dead=(h == "dqc")) for h in ("cdl", "dqc") for s in (0, 1)]
    for run in runs:
        write_metrics(run)
        old = rundir.read_json(run / rundir.METRICS)
        del old["diagnosis"]  # written before diagnoses were
        rundir.write_json(run / rundir.METRICS, old)
    index = write_report(root, resamples=0)
    assert len(index["learned_nothing"]) == 2
