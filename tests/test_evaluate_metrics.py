"""Per-run metrics against scikit-learn on hand-built predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from qcxr.config import EvalConfig
from qcxr.evaluate import metrics as M
from qcxr.evaluate.predictions import read_predictions


def _scores(rng, y, ties=False):
    s = rng.normal(size=len(y)) + 0.8 * y
    return np.round(s, 1) if ties else s


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_ap_match_sklearn(ties):
    rng = np.random.default_rng(1)
    for n in (7, 50, 400):
        y = rng.random(n) < 0.3
        y[:2] = [True, False]
        s = _scores(rng, y, ties)
        assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert M.average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_weighted_auroc_equals_auroc_of_repeated_rows():
    rng = np.random.default_rng(2)
    y = rng.random(60) < 0.4
    s = np.round(rng.normal(size=60), 1)
    counts = rng.integers(0, 4, size=(5, 60))
    got = M.weighted_auroc(s, y, counts)
    for r in range(5):
        idx = np.repeat(np.arange(60), counts[r])
        assert got[r] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_f1_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.random(100) < 0.3
    p = rng.random(100)
    assert M.f1_at(p, y, 0.5) == pytest.approx(f1_score(y, p >= 0.5))


def _write_predictions(path, ids, labels, probs, truth):
    frame = pd.DataFrame({"id": ids})
    for j, name in enumerate(labels):
        frame[f"p:{name}"] = probs[:, j]
        frame[f"y:{name}"] = truth[:, j]
    frame.to_parquet(path)


def test_single_class_label_is_nan_with_warning_and_unknown_rows_are_excluded(tmp_path):
    rng = np.random.default_rng(4)
    labels = ["Atelectasis", "Hernia", "Effusion"]
    n = 80
    truth = (rng.random((n, 3)) < 0.4).astype(float)
    truth[:, 1] = 0.0  # Hernia: no positives in this test set
    truth[:10, 2] = np.nan  # Effusion: unknown on 10 rows (MIMIC-style)
    probs = np.clip(0.5 * truth + rng.random((n, 3)) * 0.6, 0, 1)
    probs[:10, 2] = 0.99  # must not count: those rows are unknown
    _write_predictions(
        tmp_path / "predictions-nih.parquet",
        [f"i{k}" for k in range(n)],
        labels,
        np.nan_to_num(probs),
        truth,
    )
    counts = {"Atelectasis": 5000, "Hernia": 50, "Pleural Effusion": 500}
    with pytest.warns(M.SingleClassWarning, match="Hernia"):
        result = M.write_metrics(tmp_path, train_counts=counts)
    m = result["testsets"]["nih"]
    assert math.isnan(m["labels"]["Hernia"]["auroc"]) and math.isnan(m["labels"]["Hernia"]["ap"])
    known = ~np.isnan(truth[:, 2])
    assert m["labels"]["Effusion"]["auroc"] == pytest.approx(
        roc_auc_score(truth[known, 2], probs[known, 2])
    )
    assert m["labels"]["Effusion"]["n"] == n - 10
    expected_mean = np.mean(
        [roc_auc_score(truth[:, 0], probs[:, 0]), roc_auc_score(truth[known, 2], probs[known, 2])]
    )
    assert m["mean"]["auroc"] == pytest.approx(expected_mean)
    assert m["mean"]["n_labels"]["auroc"] == 2 and m["mean"]["labels_total"] == 3
    # groups by training count (aliases resolved): head > 1000, tail < 100, medium between
    assert m["groups"]["head"]["labels"] == ["Atelectasis"]
    assert m["groups"]["medium"]["labels"] == ["Effusion"]
    assert m["groups"]["tail"]["labels"] == ["Hernia"]
    assert m["groups"]["tail"]["n_labels"]["auroc"] == 0 and math.isnan(
        m["groups"]["tail"]["auroc"]
    )
    assert any("Hernia" in w for w in m["warnings"])
    on_disk = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN -> null
    assert on_disk["testsets"]["nih"]["labels"]["Hernia"]["auroc"] is None
    assert math.isnan(M.read_metrics(tmp_path)["testsets"]["nih"]["labels"]["Hernia"]["auroc"])


def test_group_boundaries_follow_config():
    cfg = EvalConfig()
    assert M.group_of(cfg.head_min_count + 1, cfg) == "head"
    assert M.group_of(cfg.head_min_count, cfg) == "medium"
    assert M.group_of(cfg.tail_max_count, cfg) == "medium"
    assert M.group_of(cfg.tail_max_count - 1, cfg) == "tail"
    assert M.group_of(None, cfg) is None


def test_bad_predictions_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions"):
        M.write_metrics(tmp_path)
    pd.DataFrame({"id": ["a"], "p:Mass": [0.2]}).to_parquet(tmp_path / "predictions-x.parquet")
    with pytest.raises(ValueError, match="y:Mass"):
        read_predictions(tmp_path / "predictions-x.parquet")
    pd.DataFrame({"id": ["a"], "p:Mass": [0.2], "y:Mass": [2.0]}).to_parquet(
        tmp_path / "p2.parquet"
    )
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        read_predictions(tmp_path / "p2.parquet")


def test_train_counts_from_csv(tmp_path):
    csv = tmp_path / "train.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "Pleural Effusion": [1, 0, 1],
            "Mass": [0, 0, 1],
            "subj_id": [1, 2, 3],
        }
    ).to_csv(csv, index=False)
    assert M.train_counts_from_csv(csv) == {"Effusion": 2.0, "Mass": 1.0}
