"""Pure train and eval steps, and their batched forms for frozen-feature training.

`train_step(state, inputs, labels, weights, key) -> (state, loss)` is one Adam step on the mean
loss over labels and real rows (weight 0 marks padding). The frozen-mode forms vmap the step over
a leading seed axis (the seeds of one grid cell train together) and scan it over a chunk of
batches gathered on device from the feature matrix, so an epoch costs a few dispatches, not one
per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from qcxr.train.losses import Elementwise, masked_mean, masked_sum_count
from qcxr.train.model import Model
from qcxr.train.state import TrainState

TrainStep = Callable[..., tuple[TrainState, jax.Array]]


def make_train_step(model: Model, tx: optax.GradientTransformation, loss: Elementwise) -> TrainStep:
    def train_step(
        state: TrainState, inputs: jax.Array, labels: jax.Array, weights: jax.Array, key: jax.Array
    ) -> tuple[TrainState, jax.Array]:
        def objective(params: Any) -> tuple[jax.Array, Any]:
            logits, batch_stats = model.train_logits(params, state.batch_stats, inputs, key)
            return masked_mean(loss, logits, labels, weights), batch_stats

        (value, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
            step=state.step + 1,
        )
        return new, value

    return train_step


def make_eval_sums(model: Model, loss: Elementwise) -> Callable[..., tuple[jax.Array, ...]]:
    """(variables, inputs, labels, weights) -> (loss sum, term count, probabilities): the sums
    for an exact dataset mean, and the predictions they came from (for the validation AUROC)."""

    def eval_sums(variables: Any, inputs: jax.Array, labels: jax.Array, weights: jax.Array):
        logits = model.logits(variables, inputs)
        total, count = masked_sum_count(loss, logits, labels, weights)
        return total, count, jax.nn.sigmoid(logits)

    return eval_sums


def gather(features: jax.Array, index: jax.Array, view: jax.Array | None) -> jax.Array:
    """Rows `index` of (N, F) features, or view `view` of rows of (N, V, F) augmented features."""
    if features.ndim == 3:
        return features[index, view]
    return features[index]


def make_frozen_chunk(step: TrainStep) -> Callable[..., tuple[TrainState, jax.Array]]:
    """Steps for S seeds over K batches: index/weights/view (K, S, B) -> losses (K, S)."""
    seeds_step = jax.vmap(step, in_axes=(0, 0, 0, 0, None))
    no_key = jax.random.key(0)  # frozen heads have no stochastic layers

    def chunk(state, features, labels, index, weights, view):
        def body(current, batch):
            idx, w, v = batch
            x = gather(features, idx, v)
            return seeds_step(current, x, labels[idx], w, no_key)

        return jax.lax.scan(body, state, (index, weights, view))

    return chunk


def make_frozen_eval(model: Model, loss: Elementwise) -> Callable[..., tuple[jax.Array, ...]]:
    """Mean loss per seed over a whole split, batched on device: index/weights (M, B) -> loss
    (S,) and the probabilities (M, S, B, n) it came from (padding rows included)."""
    sums = jax.vmap(make_eval_sums(model, loss), in_axes=(0, None, None, None))

    def evaluate(variables, features, labels, index, weights):
        def body(acc, batch):
            idx, w = batch
            total, count, probs = sums(variables, gather(features, idx, 0), labels[idx], w)
            return (acc[0] + total, acc[1] + count), probs

        seeds = jax.tree.leaves(variables)[0].shape[0]
        zero = jnp.zeros((seeds,), jnp.float32)
        (total, count), probs = jax.lax.scan(body, (zero, zero), (index, weights))
        return total / jnp.maximum(count, 1.0), probs

    return evaluate


def make_frozen_predict(model: Model) -> Callable[..., jax.Array]:
    """Probabilities of one model over a split: index (M, B) -> (M, B, n)."""

    def predict(variables, features, index):
        def body(_, idx):
            return None, jax.nn.sigmoid(model.logits(variables, gather(features, idx, 0)))

        return jax.lax.scan(body, None, index)[1]

    return predict
