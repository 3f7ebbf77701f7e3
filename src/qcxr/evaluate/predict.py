"""Probabilities per label for new images from a run's best checkpoint (`qcxr predict`).

The run directory gives (config, variables) through `qcxr.train.checkpoint.load_best`. Images
are preprocessed exactly as for training (qcxr.data.preprocess: shortest side 256 bicubic,
center crop 224) and normalised on the device. A finetuned run holds its own backbone; a
frozen-mode run holds only the head, so the backbone is rebuilt from the weights its features
were extracted with (versions.json "weights", else config model.weights) and the identity
must match, otherwise the features would not be the ones the head was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qcxr import rundir


def load_images(paths: Sequence[str | Path], config: Any) -> np.ndarray:
    """uint8 (N, crop, crop, C), C = 3 when any image is RGB (grayscale is broadcast)."""
    from qcxr.data.preprocess import preprocess

    d = config.data
    arrays = [preprocess(p, d.resize_shortest, d.crop, d.resample) for p in paths]
    channels = max(a.shape[-1] for a in arrays)
    return np.stack([np.broadcast_to(a, (*a.shape[:2], channels)) for a in arrays])


def _trained_weights(run_dir: Path) -> str | None:
    """The backbone weights identity the run recorded in versions.json, if any."""
    versions = rundir.read_versions(run_dir) or {}
    return versions.get("weights") or None


def backbone_identity(config: Any, run_dir: str | Path) -> str:
    """What the run's backbone weights were: versions.json "weights", else config model.weights
    (a finetuned tiny backbone records "tiny-random(...)"; a random ResNet "random(seed=N)")."""
    return _trained_weights(Path(run_dir)) or str(config.model.weights)


def random_weights_banner(config: Any, run_dir: str | Path) -> str | None:
    """The loud random-backbone warning for this run (qcxr.models.weights), or None."""
    from qcxr.models.weights import random_weights_warning

    return random_weights_warning(backbone_identity(config, run_dir))


def frozen_backbone(config: Any, run_dir: Path) -> tuple[Any, dict, tuple | None]:
    """(module, variables, feature standardisation or None) that made a frozen head's features."""
    from qcxr.train.data import load_feature_norm
    from qcxr.train.model import backbone_module, backbone_variables

    trained = _trained_weights(run_dir)
    if trained and trained.startswith("random"):
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, weights=trained)
        )
    variables, identity = backbone_variables(config, config.train.seed)
    if trained and identity != trained:
        raise ValueError(
            f"{run_dir}: the head was trained on features of backbone weights {trained!r}, but "
            f"{config.model.weights!r} resolves to {identity!r}; pass the same weights"
        )
    # the standardisation the head was trained with, if any
    return backbone_module(config), variables, load_feature_norm(run_dir)


def _feature_fn(config: Any, run_dir: Path):
    """images uint8 -> pooled features with the backbone the frozen head was trained on."""
    import jax

    from qcxr.data.augment import normalize

    backbone, variables, norm = frozen_backbone(config, run_dir)

    def features(images):
        pooled = backbone.apply(variables, normalize(images), train=False)
        return pooled if norm is None else (pooled - norm[0]) / norm[1]

    return jax.jit(features)


def predict_images(
    run_dir: str | Path, images: Sequence[str | Path], *, batch_size: int = 16
) -> pd.DataFrame:
    """One row per image: "image" (the path given), then one probability column per label."""
    return predict_run(run_dir, images, batch_size=batch_size)[0]


def predict_run(
    run_dir: str | Path, images: Sequence[str | Path], *, batch_size: int = 16
) -> tuple[pd.DataFrame, Any]:
    """(predict_images' table, the run's config)."""
    import jax

    from qcxr.train.checkpoint import load_best
    from qcxr.train.model import build_model

    if not images:
        raise ValueError("no images given")
    run_dir = Path(run_dir)
    config, variables = load_best(run_dir)
    from qcxr.config import task_of

    labels = list(task_of(config).labels)
    model = build_model(config)
    features = _feature_fn(config, run_dir) if config.train.mode == "frozen" else None
    logits_fn = jax.jit(model.logits)
    out = []
    for start in range(0, len(images), batch_size):
        batch = load_images(images[start : start + batch_size], config)
        inputs = features(batch) if features is not None else batch
        out.append(np.asarray(jax.nn.sigmoid(logits_fn(variables, inputs))))
    probs = np.concatenate(out)
    if probs.shape[1] != len(labels):
        raise ValueError(f"{run_dir}: model gives {probs.shape[1]} outputs, task has {len(labels)}")
    frame = pd.DataFrame(probs, columns=labels)
    frame.insert(0, "image", [str(p) for p in images])
    return frame, config
