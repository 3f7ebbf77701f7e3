"""Grad-CAM heat maps for a trained run, in JAX (`qcxr predict --explain`).

Grad-CAM (Selvaraju et al., 2017): for a label's logit y and the activations A (B, h, w, C) of
the last convolutional block, the channel weights are the spatial mean of dy/dA, the map is
ReLU(sum_c w_c A_c), here upsampled (bilinear) to the input crop and scaled to [0, 1].

The trained model is split at that block: `feature_map` of ResNet50 (stage 4, before the
global pool) or of TinyBackbone (its last patch layer, a stride-8 convolution) gives A; the
global mean, a frozen run's feature standardisation and the head give the logits from A, as the
model's own forward pass does. A finetuned run holds its backbone; a frozen run's backbone is
rebuilt and identity-checked as for prediction (qcxr.evaluate.predict.frozen_backbone). One
forward pass and one VJP, vmapped over the K labels, give a whole batch's maps; one compiled
function serves every batch (the last is padded to the batch size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SplitModel:
    """A trained model split at its last convolutional block; pure functions of `variables`."""

    feature_map: Callable[[Any, jax.Array], jax.Array]  # (vars, uint8 images) -> (B, h, w, C)
    logits_of_map: Callable[[Any, jax.Array], jax.Array]  # (vars, activations) -> (B, L)
    variables: dict[str, Any]


def global_pool(activations: jax.Array) -> jax.Array:
    """The backbones' global mean, in float32 at least (as ResNet50 and TinyBackbone pool)."""
    dtype = jnp.promote_types(activations.dtype, jnp.float32)
    return jnp.mean(activations.astype(dtype), axis=(1, 2))


def cams_from_vjp(vjp: Callable, activations: jax.Array, label_index: jax.Array, n: int):
    """ReLU(sum_c mean_hw(dy_k/dA) A_c) for labels `label_index` (B, K): (B, K, h, w)."""
    cotangents = jax.nn.one_hot(label_index, n, dtype=activations.dtype)  # (B, K, n)
    # One VJP per label slot, all at once: the forward pass is shared.
    (grads,) = jax.vmap(vjp, in_axes=1, out_axes=1)(cotangents)  # (B, K, h, w, C)
    weights = grads.mean(axis=(2, 3))  # (B, K, C)
    return jax.nn.relu(jnp.einsum("bkc,bhwc->bkhw", weights, activations))


def grad_cam(
    feature_map: Callable[[jax.Array], jax.Array],
    logits_of_map: Callable[[jax.Array], jax.Array],
    images: jax.Array,
    label_index: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(raw maps (B, K, h, w) at the block's resolution, logits (B, L)) for labels (B, K)."""
    activations = feature_map(images)
    logits, vjp = jax.vjp(logits_of_map, activations)
    return cams_from_vjp(vjp, activations, label_index, logits.shape[-1]), logits


def upsampled(cams: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(..., h, w) -> (..., H, W), bilinear with half-pixel centres (the crop's pixel grid)."""
    return jax.image.resize(cams, (*cams.shape[:-2], *size), method="bilinear")


def normalised(maps: jax.Array) -> jax.Array:
    """Each map scaled to [0, 1] by its own min and max; a constant map becomes all zeros."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)


def explain_fn(model: SplitModel, top_k: int) -> Callable:
    """jit'd (variables, uint8 images) -> (probabilities (B, L), top-K label indices (B, K),
    heat maps (B, K, H, W) in [0, 1] on the image grid)."""

    def explain(variables: Any, images: jax.Array):
        activations = model.feature_map(variables, images)
        logits, vjp = jax.vjp(lambda a: model.logits_of_map(variables, a), activations)
        top = jax.lax.top_k(logits, top_k)[1]  # sigmoid is monotone: top logits = top probs
        cams = cams_from_vjp(vjp, activations, top, logits.shape[-1])
        return jax.nn.sigmoid(logits), top, normalised(upsampled(cams, images.shape[1:3]))

    return jax.jit(explain)


def _finetune_split(config: Any, variables: dict[str, Any]) -> SplitModel:
    from qcxr.data.augment import normalize
    from qcxr.train.model import backbone_module, head_module

    backbone, head = backbone_module(config), head_module(config)

    def feature_map(v: Any, images: jax.Array) -> jax.Array:
        own = {"params": v["params"]["backbone"], "batch_stats": v["batch_stats"]["backbone"]}
        return backbone.apply(own, normalize(images), train=False, method="feature_map")

    def logits_of_map(v: Any, activations: jax.Array) -> jax.Array:
        return head.apply({"params": v["params"]["head"]}, global_pool(activations))

    return SplitModel(feature_map, logits_of_map, variables)


def _frozen_split(config: Any, variables: dict[str, Any], run_dir: Path) -> SplitModel:
    from qcxr.data.augment import normalize
    from qcxr.evaluate.predict import frozen_backbone
    from qcxr.train.model import head_module

    backbone, backbone_vars, norm = frozen_backbone(config, run_dir)
    head = head_module(config)
    own = {"backbone": backbone_vars, "head": variables["params"]["head"]}
    if norm is not None:
        own["norm"] = {"mean": jnp.asarray(norm[0]), "std": jnp.asarray(norm[1])}

    def feature_map(v: Any, images: jax.Array) -> jax.Array:
        return backbone.apply(v["backbone"], normalize(images), train=False, method="feature_map")

    def logits_of_map(v: Any, activations: jax.Array) -> jax.Array:
        features = global_pool(activations)
        if "norm" in v:  # the pytree's structure is static: decided once, when traced
            features = (features - v["norm"]["mean"]) / v["norm"]["std"]
        return head.apply({"params": v["head"]}, features)

    return SplitModel(feature_map, logits_of_map, own)


def split_model(config: Any, variables: dict[str, Any], run_dir: str | Path) -> SplitModel:
    """The run's model split at the last convolutional block (finetune or frozen mode)."""
    if config.train.mode == "finetune":
        return _finetune_split(config, variables)
    if config.train.mode == "frozen":
        return _frozen_split(config, variables, Path(run_dir))
    raise ValueError(f"{run_dir}: train.mode {config.train.mode!r} has no Grad-CAM")


@dataclass(frozen=True)
class Explanation:
    """Probabilities and Grad-CAM heat maps of the top labels for a list of images."""

    probabilities: pd.DataFrame  # "image" (the path given), then one column per label
    top: np.ndarray  # (N, K) label indices, most probable first
    maps: np.ndarray  # (N, K, H, W) float32 in [0, 1], on the preprocessed crop's grid
    crops: np.ndarray  # (N, H, W, C) uint8: the images as the model saw them
    labels: list[str]
    config: Any
    run_dir: Path


def _rgb(crops: np.ndarray) -> np.ndarray:
    """Grayscale broadcast to 3 channels, as normalisation does: one shape for every batch."""
    return np.ascontiguousarray(np.broadcast_to(crops, (*crops.shape[:-1], 3)))


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
    """The batch repeated at its last image up to `size` rows: one compiled shape for all."""
    return np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), axis=0)])


def explain_images(
    run_dir: str | Path, images: Sequence[str | Path], *, top_k: int = 3, batch_size: int = 16
) -> Explanation:
    """Probabilities and the top-`top_k` labels' Grad-CAM maps for each image (all labels when
    the run has fewer), from a run's best checkpoint (images preprocessed as for training)."""
    from qcxr.config import task_of
    from qcxr.evaluate.predict import load_images
    from qcxr.train.checkpoint import load_best

    if not images:
        raise ValueError("no images given")
    run_dir = Path(run_dir)
    config, variables = load_best(run_dir)
    labels = list(task_of(config).labels)
    if top_k < 1:
        raise ValueError(f"--top {top_k}: must be at least 1")
    model = split_model(config, variables, run_dir)
    explain = explain_fn(model, min(top_k, len(labels)))  # a run may have fewer labels than K
    size = min(batch_size, len(images))
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(images), size):
        crops = _rgb(load_images(images[start : start + size], config))
        out = explain(model.variables, _padded(crops, size))
        parts.append((crops, *(np.asarray(a)[: len(crops)] for a in out)))
    crops, probs, top, maps = (np.concatenate(column) for column in zip(*parts, strict=True))
    frame = pd.DataFrame(probs, columns=labels)
    frame.insert(0, "image", [str(p) for p in images])
    return Explanation(frame, top, maps, crops, labels, config, run_dir)
