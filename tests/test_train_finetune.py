"""Finetune mode end to end on a synthetic study (real label files, images, cache, loader and
augmentation), with the small test backbone: same code path as ResNet50."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from qcxr.data.augment import augment_params
from qcxr.data.cache import ImageCache
from qcxr.data.loader import Loader, epoch_order
from qcxr.rundir import epoch_rows
from qcxr.train.checkpoint import load_best
from qcxr.train.finetune import train_finetune
from qcxr.train.model import build_model, init_variables
from test_train_support import finetune_config, small_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return small_study(root / "study"), root / "cache"


def val_loss_of(cfg, variables, dataset, cache) -> float:
    """Mean BCE over the val images, computed with numpy from the model's logits."""
    loader = Loader(dataset, cache, batch_size=64, seed=0, shuffle=False)
    logits = np.concatenate(
        [np.asarray(build_model(cfg).logits(variables, b.images)) for b in loader.epoch(0)]
    ).astype(np.float64)
    y = dataset.labels.astype(np.float64)
    return float((np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))).mean())


def test_cdl_and_dqc_finetune_learn_on_identical_batches(study, tmp_path):
    root, cache = study
    fed: dict[str, list] = {}

    def hook(cfg, epoch, position, ids, key):
        flip, angle = augment_params(key, len(ids))
        fed.setdefault(cfg.model.head, []).append(
            (epoch, position, ids, np.asarray(flip).tolist(), np.asarray(angle).tolist())
        )

    for head in ("cdl", "dqc"):
        cfg = finetune_config(root, cache, model={"head": head}, train={"max_epochs": 2})
        run = tmp_path / head / "seed-0"
        result = train_finetune(cfg, run, progress=False, on_batch=hook)
        assert result.status == "finished", result.reason
        epochs = epoch_rows(run / "history.csv")
        assert len(epochs) == 2
        assert epochs["val_loss"][1] < epochs["val_loss"][0]  # it learns
        best = int(epochs["val_loss"].idxmin())
        assert result.best_epoch == best + 1
        loaded, variables = load_best(run)
        assert set(variables) == {"params", "batch_stats"}
        from qcxr.train.data import datasets

        val = datasets(loaded, check_files=True)["val"]
        assert val_loss_of(loaded, variables, val, ImageCache(cache)) == pytest.approx(
            epochs["val_loss"][best], rel=1e-4
        )
        preds = pd.read_parquet(run / "predictions-nih.parquet")
        assert preds["id"].tolist() == datasets(loaded, check_files=False)["nih"].ids
        probs = preds.filter(like="p:").to_numpy()
        assert np.all((probs > 0) & (probs < 1))
        assert (run / "predictions-mimic.parquet").is_file()
    # Same seed: the same example ids in the same batches, with the same flips and angles.
    assert fed["cdl"] == fed["dqc"]
    n = len(datasets(loaded, check_files=False)["train"].ids)
    order = epoch_order(n, 0, 1)
    ids = datasets(loaded, check_files=False)["train"].ids
    second_epoch_first_batch = [b for b in fed["cdl"] if b[:2] == (1, 0)][0]
    assert second_epoch_first_batch[2] == [ids[i] for i in order[:16]]
    angles = np.concatenate([b[4] for b in fed["cdl"]])
    assert np.abs(angles).max() <= np.deg2rad(15) + 1e-6 and np.abs(angles).max() > 0
    # BatchNorm running statistics changed during training (they are trained state, too).
    cfg, trained = load_best(tmp_path / "cdl" / "seed-0")
    initial, _ = init_variables(cfg, 0)
    leaves = jax.tree.leaves(trained["batch_stats"]), jax.tree.leaves(initial["batch_stats"])
    assert all(not np.allclose(a, b) for a, b in zip(*leaves, strict=True))
