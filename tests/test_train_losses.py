"""Losses against float64 numpy formulas; masking of padding rows and unknown labels;
early stopping; learning-rate schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qcxr.config import TrainConfig
from qcxr.train.early_stopping import EarlyStopping
from qcxr.train.losses import elementwise_loss, masked_mean
from qcxr.train.state import learning_rate

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(6, 5)).astype(np.float32) * 3
LABELS = (rng.random((6, 5)) < 0.4).astype(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference(name: str, z: np.ndarray, y: np.ndarray, freq: np.ndarray) -> np.ndarray:
    z, y = z.astype(np.float64), y.astype(np.float64)
    p = sigmoid(z)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if name == "bce":
        return bce
    if name == "weighted_bce":
        return (y * np.exp(1 - freq) + (1 - y) * np.exp(freq)) * bce
    if name == "focal":
        p_t = y * p + (1 - y) * (1 - p)
        return (1 - p_t) ** 2 * bce
    if name == "asl":
        shifted = np.maximum(p - 0.05, 0)
        pos = (1 - p) ** 1 * np.log(p)
        neg = shifted**4 * np.log(1 - shifted)
        return -(y * pos + (1 - y) * neg)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["bce", "weighted_bce", "focal", "asl"])
def test_losses_match_formulas(name):
    freq = LABELS.mean(0)
    loss = elementwise_loss(TrainConfig(loss=name), freq)
    got = masked_mean(loss, LOGITS, LABELS, np.ones(6, np.float32))
    assert float(got) == pytest.approx(reference(name, LOGITS, LABELS, freq).mean(), rel=1e-5)


def test_bce_is_the_mean_over_labels_and_real_rows_only():
    loss = elementwise_loss(TrainConfig())
    labels = LABELS.copy()
    labels[1, 2] = np.nan  # unknown truth: left out of that label only
    weights = np.array([1, 1, 1, 1, 0, 0], np.float32)  # two padding rows
    expected = reference("bce", LOGITS, np.nan_to_num(labels), None)
    keep = np.isfinite(labels) & (weights[:, None] > 0)
    got = masked_mean(loss, LOGITS, labels, weights)
    assert float(got) == pytest.approx(expected[keep].mean(), rel=1e-6)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="train.loss"):
        elementwise_loss(TrainConfig(loss="hinge"))


def test_early_stopping_sequence():
    stop = EarlyStopping(patience=2, max_epochs=10)
    history = []
    for val in [0.9, 0.8, 0.85, 0.8, 0.7, 0.75, 0.71]:
        stop, improved = stop.update(val)
        history.append((improved, stop.stop_reason))
    # 0.8 again is not an improvement (strictly lower needed); stop 2 epochs after 0.7.
    assert [h[0] for h in history] == [True, True, False, False, True, False, False]
    assert [h[1] for h in history][:3] == [None, None, None]
    assert history[3][1] == "early_stop"  # 2 epochs without improvement after epoch 2
    assert stop.best_epoch == 5 and stop.best_loss == 0.7 and stop.stop_reason == "early_stop"
    limited = EarlyStopping(patience=5, max_epochs=2).update(1.0)[0].update(0.5)[0]
    assert limited.stop_reason == "max_epochs"
    assert EarlyStopping.from_dict(stop.to_dict()) == stop
    assert EarlyStopping.from_dict(EarlyStopping(5, 50).to_dict()).best_loss == math.inf


def test_schedules():
    assert float(learning_rate(TrainConfig(), 10)(123)) == pytest.approx(1e-4)
    cosine = learning_rate(TrainConfig(schedule="cosine", max_epochs=2), 10)
    assert float(cosine(0)) == pytest.approx(1e-4) and float(cosine(20)) == pytest.approx(0.0)
    warm = learning_rate(TrainConfig(schedule="warmup_cosine", warmup_steps=5), 10)
    assert float(warm(0)) == 0.0 and float(warm(5)) == pytest.approx(1e-4)
