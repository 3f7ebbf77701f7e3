"""Frozen-mode training end to end: learning, early stopping, best checkpoint, predictions,
identical batches per seed, vmap vs one seed at a time, non-finite loss."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd
import pytest

from qcxr.rundir import epoch_rows, is_finished
from qcxr.train.checkpoint import RunCheckpoints, load_best
from qcxr.train.frozen import train_frozen
from qcxr.train.model import build_model
from test_train_support import config, frozen_data, history_without_time


def seeds_of(cfg, seeds):
    return [dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=s)) for s in seeds]


def val_loss_of(cfg, variables, data) -> float:
    """Mean BCE of a model on the val split, computed independently of the training code."""
    logits = np.asarray(build_model(cfg).logits(variables, data.val.inputs), np.float64)
    y = data.val.labels.astype(np.float64)
    bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    return float(bce.mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both heads trained for 4 epochs on seeds 0 and 1: {head: (results, run dirs, fed)}, where
    fed[seed] lists the (epoch, position, ids) of every batch that seed was fed."""
    data = frozen_data()
    out = {}
    for head in ("cdl", "dqc"):
        fed: dict[int, list] = {}

        def record(cfg, epoch, position, ids, views, fed=fed):
            fed.setdefault(cfg.train.seed, []).append((epoch, position, ids))

        cfg = config(model={"head": head}, train={"max_epochs": 4})
        root = tmp_path_factory.mktemp(head)
        dirs = [root / f"seed-{s}" for s in (0, 1)]
        results = train_frozen(seeds_of(cfg, (0, 1)), dirs, data, progress=False, on_batch=record)
        out[head] = (results, dirs, fed)
    return out


@pytest.mark.parametrize("head", ["cdl", "dqc"])
def test_heads_learn_and_best_checkpoint_is_lowest_val_loss(trained, head):
    data = frozen_data()
    cfg = config(model={"head": head}, train={"max_epochs": 4})
    results, dirs, _ = trained[head]
    for result, run_dir in zip(results, dirs, strict=True):
        assert result.status == "finished" and is_finished(run_dir)
        epochs = epoch_rows(run_dir / "history.csv")
        assert len(epochs) == 4
        assert epochs["val_loss"].iloc[-1] < epochs["val_loss"].iloc[0]  # it learns
        best = int(epochs["val_loss"].idxmin())
        assert result.best_epoch == epochs["epoch"][best]
        loaded_cfg, variables = load_best(run_dir)
        assert loaded_cfg.model.head == head
        # The best checkpoint holds the model whose val loss history recorded as lowest.
        assert val_loss_of(cfg, variables, data) == pytest.approx(epochs["val_loss"][best], 1e-5)
        # Per-step rows: one per batch, epoch rows average them.
        steps = pd.read_csv(run_dir / "history.csv")
        steps = steps[steps["val_loss"].isna()]
        assert len(steps) == 4 * 20 and list(steps["step"]) == list(range(1, 81))
        first = steps[steps["epoch"] == 1]["train_loss"].mean()
        assert epochs["train_loss"][0] == pytest.approx(first, 1e-6)
        # Predictions of the best checkpoint, the columns of qcxr.rundir, checked against the model.
        preds = pd.read_parquet(run_dir / "predictions-nih.parquet")
        names = data.tests["nih"].label_names
        assert list(preds.columns) == ["id"] + [f"{k}:{n}" for n in names for k in ("p", "y")]
        probs = jax.nn.sigmoid(build_model(cfg).logits(variables, data.tests["nih"].inputs))
        np.testing.assert_allclose(preds[[f"p:{n}" for n in names]], probs, atol=1e-6)
        np.testing.assert_array_equal(preds[[f"y:{n}" for n in names]], data.tests["nih"].labels)
        assert (run_dir / "predictions-mimic.parquet").is_file()
        assert (run_dir / "versions.json").is_file() and (run_dir / "config.yaml").is_file()


def test_early_stopping_stops_after_patience_without_improvement(tmp_path):
    # Validation labels are noise: once the base rates are learnt, val loss can only rise.
    data = frozen_data(n_train=96, noise_val=True)
    cfg = config(train={"max_epochs": 40, "patience": 2, "learning_rate": 0.05})
    (result,) = train_frozen([cfg], [tmp_path / "run"], data, progress=False)
    epochs = epoch_rows(tmp_path / "run" / "history.csv")
    assert result.reason == "early_stop"
    assert len(epochs) < 40
    best = int(epochs["val_loss"].idxmin())
    assert result.best_epoch == best + 1
    assert len(epochs) == best + 1 + 2  # stopped exactly `patience` epochs after the best
    assert (epochs["val_loss"][best + 1 :] >= epochs["val_loss"][best]).all()
    best_meta = RunCheckpoints(tmp_path / "run").best_meta()
    assert best_meta["epoch"] == best + 1
    assert best_meta["val_loss"] == pytest.approx(epochs["val_loss"][best])


def test_same_seed_same_batches_for_cdl_and_dqc(trained):
    """What the two heads were fed, seed by seed."""
    FED = {(head, seed): batches for head in trained for seed, batches in trained[head][2].items()}
    assert FED[("cdl", 0)] == FED[("dqc", 0)]
    assert FED[("cdl", 1)] == FED[("dqc", 1)]
    assert FED[("cdl", 0)] != FED[("cdl", 1)]
    batches = FED[("cdl", 0)]
    assert len(batches) == 4 * 20  # 640 examples in batches of 32, 4 epochs
    ids = frozen_data().train.ids
    epoch0 = [i for e, _, b in batches if e == 0 for i in b]
    assert sorted(epoch0) == sorted(ids)  # every example once per epoch
    from qcxr.data.loader import epoch_order

    order = np.asarray(epoch_order(640, 0, 1))
    assert batches[20][2] == [ids[i] for i in order[:32]]


def test_short_last_batch_is_padded_not_dropped(tmp_path):
    data = frozen_data(n_train=200)  # 6 full batches and one of 8
    fed = []
    cfg = config(train={"max_epochs": 1})
    train_frozen(
        [cfg],
        [tmp_path / "r"],
        data,
        progress=False,
        on_batch=lambda c, e, p, ids, v: fed.append(ids),
    )
    assert [len(b) for b in fed] == [32] * 6 + [8]
    assert sorted(i for b in fed for i in b) == sorted(data.train.ids)


def test_vmapped_seeds_match_one_seed_at_a_time(tmp_path):
    data = frozen_data(n_train=96)
    cfg = config(model={"head": "dqc"}, train={"max_epochs": 2, "vmap_seeds": "yes"})
    train_frozen(seeds_of(cfg, (3, 4)), [tmp_path / "v3", tmp_path / "v4"], data, progress=False)
    single = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, vmap_seeds="no"))
    train_frozen(seeds_of(single, (3, 4)), [tmp_path / "s3", tmp_path / "s4"], data, progress=False)
    for seed in (3, 4):
        together = history_without_time(tmp_path / f"v{seed}")
        alone = history_without_time(tmp_path / f"s{seed}")
        np.testing.assert_allclose(together.to_numpy(float), alone.to_numpy(float), rtol=1e-5)


def test_nonfinite_loss_stops_the_run_and_keeps_checkpoints(tmp_path, capsys):
    data = frozen_data(n_train=96)
    cfg = config(train={"max_epochs": 2})
    run = tmp_path / "run"
    train_frozen([cfg], [run], data, progress=False)
    (run / "status.json").unlink()  # pretend it was stopped after epoch 2; continue with bad data
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=4))
    bad_x = data.train.inputs.copy()
    bad_x[:] = np.nan
    bad = dataclasses.replace(data, train=dataclasses.replace(data.train, inputs=bad_x))
    (result,) = train_frozen([longer], [run], bad, resume=True, progress=False)
    assert result.status == "failed"
    assert "nan" in result.reason and "epoch 3" in result.reason
    assert "nan" in capsys.readouterr().err
    checkpoints = RunCheckpoints(run)
    assert checkpoints.latest_meta()["epoch"] == 2  # the last good one, end of epoch 2
    _, variables = load_best(run)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(variables))
