"""The YAML `eval:` section takes effect: metrics.json (F1 threshold, head/medium/tail
boundaries), the report (alpha, bootstrap count) and `qcxr evaluate`.

The run directories are made of real files written by the project's writers (config.yaml from
a loaded YAML config, train.predictions, rundir's train_counts.json), with no training.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.cli import main
from qcxr.evaluate.metrics import write_metrics
from qcxr.evaluate.report import write_report
from qcxr.labels import TASKS
from qcxr.train.predictions import write_predictions
from test_evaluate_plots import assert_figure

LABELS = list(TASKS["cxr8"])
N_IMAGES = 90
SEEDS = (0, 1, 2)
EVAL_YAML = """\
task: cxr8
eval:
  f1_threshold: 0.3
  alpha: 0.1
  bootstrap: 37
  head_min_count: 400
  tail_max_count: 40
"""
# Training counts that fall in different groups under the YAML's boundaries than the paper's
# (1000 and 100): 500 is head here (medium by default), 60 medium (tail by default).
TRAIN_COUNTS = dict(zip(LABELS, [5000.0, 500.0, 450.0, 300.0, 60.0, 50.0, 30.0, 10.0], strict=True))


def _write_run(experiment, config, head, seed, truth):
    cfg = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, head=head),
        train=dataclasses.replace(config.train, seed=seed),
    )
    run = rundir.run_path(experiment, cfg.task, head, seed)
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text(yaml.safe_dump(config_lib.to_dict(cfg)))
    rundir.write_json(run / rundir.TRAIN_COUNTS, TRAIN_COUNTS)
    noise = np.random.default_rng(100 * seed + len(head)).normal(size=truth.shape)
    strength = 1.5 if head == "cdl" else 0.7
    probs = 1 / (1 + np.exp(-(strength * (2 * truth - 1) + noise - 0.6)))
    ids = [f"img{i}" for i in range(N_IMAGES)]
    write_predictions(rundir.predictions_path(run, "nih"), ids, probs, truth, LABELS)
    return run


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-config")
    (root / "eval.yaml").write_text(EVAL_YAML)
    config = config_lib.load(root / "eval.yaml")
    assert config.eval.f1_threshold == 0.3 and config.eval.bootstrap == 37
    truth = (np.random.default_rng(0).random((N_IMAGES, len(LABELS))) < 0.35).astype(float)
    runs = [
        _write_run(root / "exp", config, head, seed, truth)
        for head in ("cdl", "dqc")
        for seed in SEEDS
    ]
    return root / "exp", runs


def test_metrics_json_uses_the_runs_eval_section(experiment):
    _, runs = experiment
    for run in runs:
        result = write_metrics(run)
        on_disk = rundir.read_json(run / rundir.METRICS)
        assert on_disk["eval"] == {
            "f1_threshold": 0.3,
            "head_min_count": 400,
            "tail_max_count": 40,
            "source": "config.yaml",
        }
        frame = pd.read_parquet(rundir.predictions_path(run, "nih"))
        m = on_disk["testsets"]["nih"]
        changed = 0
        for name in LABELS:
            y, p = frame[f"y:{name}"].to_numpy() == 1, frame[f"p:{name}"].to_numpy()
            assert m["labels"][name]["f1"] == pytest.approx(f1_score(y, p >= 0.3), abs=1e-12)
            changed += f1_score(y, p >= 0.3) != pytest.approx(f1_score(y, p >= 0.5))
        assert changed >= len(LABELS) - 1  # the threshold matters for these predictions
        groups = {g: m["groups"][g]["labels"] for g in ("head", "medium", "tail")}
        # head > 400 (5000, 500, 450), tail < 40 (30, 10); the paper's 1000 and 100 would give
        # head = the first label only and tail = the last four
        assert groups == {"head": LABELS[:3], "medium": LABELS[3:6], "tail": LABELS[6:]}
        assert result["eval"]["source"] == "config.yaml"


def test_an_explicit_eval_config_overrides_the_runs(experiment):
    _, runs = experiment
    given = config_lib.EvalConfig(f1_threshold=0.7)
    result = write_metrics(runs[0], given)
    assert result["eval"] == {
        "f1_threshold": 0.7,
        "head_min_count": 1000,
        "tail_max_count": 100,
        "source": "given",
    }
    frame = pd.read_parquet(rundir.predictions_path(runs[0], "nih"))
    y, p = frame[f"y:{LABELS[0]}"].to_numpy() == 1, frame[f"p:{LABELS[0]}"].to_numpy()
    f1 = result["testsets"]["nih"]["labels"][LABELS[0]]["f1"]
    assert f1 == pytest.approx(f1_score(y, p >= 0.7))
    write_metrics(runs[0])  # back to the run's own settings for the other tests


def test_the_report_uses_and_states_the_runs_alpha_and_bootstrap(experiment):
    exp, _ = experiment
    index = write_report(exp)
    assert index["eval"]["alpha"] == 0.1 and index["eval"]["bootstrap"] == 37
    assert "config.yaml" in index["eval"]["source"]
    summary = exp / "summary"
    html = (summary / "report.html").read_text()
    settings = html.split("id='eval-settings'>")[1].split("</p>")[0]
    assert "alpha = 0.1" in settings and "bootstrap = 37 resamples" in settings
    assert "F1 threshold = 0.3" in settings and "90% bootstrap intervals" in settings
    assert "Bootstrap 90% confidence intervals of seed-mean AUROC (37 resamples)" in html
    boot = pd.read_csv(summary / "bootstrap.csv")
    assert set(boot["resamples"]) == {37}  # every label has both classes: all 37 draws count
    assert_figure(summary / "figures" / "volcano-cxr8.png", ["p = 0.1"])
    assert "p = 0.05" not in (summary / "figures" / "volcano-cxr8.svg").read_text()

    # the same resamples (seed 0) at alpha 0.05: every interval contains the 90% one
    wide = write_report(exp, alpha=0.05)
    assert wide["eval"]["alpha"] == 0.05 and "alpha = 0.05" in wide["eval"]["source"]
    boot95 = pd.read_csv(summary / "bootstrap.csv")
    assert (boot95["lo"] <= boot["lo"] + 1e-12).all() and (boot95["hi"] >= boot["hi"] - 1e-12).all()
    assert ((boot95["hi"] - boot95["lo"]) > (boot["hi"] - boot["lo"]) + 1e-9).any()


def test_an_explicit_bootstrap_count_overrides_the_runs(experiment, capsys):
    exp, _ = experiment
    assert main(["report", str(exp), "--bootstrap", "11"]) == 0
    out = capsys.readouterr().out
    assert "eval: alpha = 0.1, bootstrap = 11" in out
    assert set(pd.read_csv(exp / "summary" / "bootstrap.csv")["resamples"]) == {11}
    html = (exp / "summary" / "report.html").read_text()
    assert "bootstrap = 11 resamples" in html and "alpha = 0.1" in html


def test_qcxr_evaluate_uses_the_runs_eval_section(experiment, capsys):
    _, runs = experiment
    assert main(["evaluate", str(runs[1]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)[str(runs[1])]
    assert data["eval"]["f1_threshold"] == 0.3 and data["eval"]["source"] == "config.yaml"
    assert data["testsets"]["nih"]["f1_threshold"] == 0.3


def test_runs_that_disagree_on_eval_settings_are_an_error_naming_two(experiment):
    exp, runs = experiment
    other = runs[-1]
    original = (other / rundir.CONFIG).read_text()
    cfg = yaml.safe_load(original)
    cfg["eval"]["alpha"] = 0.2
    (other / rundir.CONFIG).write_text(yaml.safe_dump(cfg))
    try:
        with pytest.raises(ValueError, match="eval.alpha") as err:
            write_report(exp, resamples=0)
        assert str(runs[0]) in str(err.value) and str(other) in str(err.value)
        # an explicit alpha settles it
        assert write_report(exp, resamples=0, alpha=0.1)["eval"]["alpha"] == 0.1
    finally:
        (other / rundir.CONFIG).write_text(original)
