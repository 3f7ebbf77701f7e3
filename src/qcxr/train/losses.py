"""Multi-label losses on logits: mean BCE (the paper, Sec. III-F) and long-tail alternatives.

Every loss is elementwise (B, n) and reduced by `masked_mean`: the mean over labels and real rows.
A row weight of 0 marks padding (a short last batch padded to a fixed shape); a NaN label marks
an unknown truth (MIMIC) and is left out of that label only. Only (B, n) values are ever built,
so the loss and its gradient cost O(B n) memory whatever the backbone.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qcxr.config import LOSSES, TrainConfig

Elementwise = Callable[[jax.Array, jax.Array], jax.Array]


def bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(logits, labels)


def weighted_bce(pos_frequency: np.ndarray) -> Elementwise:
    """BCE with positive weight e^(1-p) and negative weight e^p, p = class frequency (CheXFusion)."""
    p = jnp.asarray(pos_frequency, jnp.float32)

    def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
        weight = labels * jnp.exp(1.0 - p) + (1.0 - labels) * jnp.exp(p)
        return weight * optax.sigmoid_binary_cross_entropy(logits, labels)

    return loss


def focal(gamma: float) -> Elementwise:
    """Sigmoid focal loss (Lin et al.), no alpha balancing."""

    def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return optax.sigmoid_focal_loss(logits, labels, alpha=None, gamma=gamma)

    return loss


def asl(gamma_pos: float, gamma_neg: float, clip: float) -> Elementwise:
    """Asymmetric loss (Ridnik et al. 2021): shifted probability for negatives, two focusings."""

    def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
        p = jax.nn.sigmoid(logits)
        pos = (1.0 - p) ** gamma_pos * jax.nn.log_sigmoid(logits)
        shifted = jnp.maximum(p - clip, 0.0)
        # log(1 - shifted) written as log(min(1 - p + clip, 1)): stays finite as p -> 1.
        neg = shifted**gamma_neg * jnp.log(jnp.minimum(jax.nn.sigmoid(-logits) + clip, 1.0))
        return -(labels * pos + (1.0 - labels) * neg)

    return loss


def elementwise_loss(config: TrainConfig, pos_frequency: np.ndarray | None = None) -> Elementwise:
    """The configured elementwise loss; weighted_bce needs the training label frequencies."""
    if config.loss == "bce":
        return bce
    if config.loss == "weighted_bce":
        if pos_frequency is None:
            raise ValueError("loss 'weighted_bce' needs the training label frequencies")
        return weighted_bce(pos_frequency)
    if config.loss == "focal":
        return focal(config.focal_gamma)
    if config.loss == "asl":
        return asl(config.asl_gamma_pos, config.asl_gamma_neg, config.asl_clip)
    raise ValueError(f"train.loss: unknown loss {config.loss!r}; choose from {LOSSES}")


def masked_sum_count(
    loss: Elementwise, logits: jax.Array, labels: jax.Array, row_weight: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Sum of elementwise losses over known labels of real rows, and how many terms it holds."""
    known = jnp.isfinite(labels) & (row_weight[:, None] > 0)
    values = loss(logits, jnp.where(known, labels, 0.0))
    return jnp.sum(jnp.where(known, values, 0.0)), jnp.sum(known, dtype=jnp.float32)


def masked_mean(
    loss: Elementwise, logits: jax.Array, labels: jax.Array, row_weight: jax.Array
) -> jax.Array:
    """Mean over labels and real rows (the paper's mean BCE when `loss` is bce)."""
    total, count = masked_sum_count(loss, logits, labels, row_weight)
    return total / jnp.maximum(count, 1.0)
