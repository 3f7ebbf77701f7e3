"""The JAX training step shared by `qcxr` and `pennylane-jax`: they differ only in the head.

One jitted step (forward, mean BCE, gradients, Adam update) on a zero batch resident on the
default device; the train state is donated so that it is updated in place, as a training loop
would.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qcxr.bench.frameworks import FEATURES, IMAGE_SHAPE, LEARNING_RATE


class Net(nn.Module):
    """Optional ResNet50 trunk (train mode: BatchNorm statistics update) followed by `head`."""

    head: nn.Module
    backbone: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if self.backbone:
            from qcxr.models.resnet import resnet50

            x = resnet50()(x, train=train)
        return self.head(x)


def zero_batch(num_labels: int, batch: int, backbone: bool) -> tuple[jax.Array, jax.Array]:
    """Zero inputs and labels already on the device (Sec. III-E)."""
    shape = (batch, *IMAGE_SHAPE) if backbone else (batch, FEATURES)
    inputs = jax.device_put(np.zeros(shape, np.float32))
    labels = jax.device_put(np.zeros((batch, num_labels), np.float32))
    return inputs, labels


def build_flax_step(
    head: nn.Module, num_labels: int, batch: int, backbone: bool, seed: int = 0
) -> tuple[Callable[[], jax.Array], Callable[[Any], Any]]:
    """(step, sync) for `head` (on the ResNet50 trunk when `backbone`)."""
    net = Net(head=head, backbone=backbone)
    # Parameter shapes do not depend on the image size: initialise on a small image.
    probe = jnp.zeros((1, 64, 64, 3) if backbone else (1, FEATURES), jnp.float32)
    variables = jax.jit(partial(net.init, train=False))(jax.random.PRNGKey(seed), probe)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    tx = optax.adam(LEARNING_RATE)

    def loss_of(params: Any, batch_stats: Any, inputs: jax.Array, labels: jax.Array):
        if backbone:
            logits, updates = net.apply(
                {"params": params, "batch_stats": batch_stats},
                inputs,
                train=True,
                mutable=["batch_stats"],
            )
            batch_stats = updates["batch_stats"]
        else:
            logits = net.apply({"params": params}, inputs, train=True)
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), batch_stats

    @partial(jax.jit, donate_argnums=(0,))
    def train_step(state: tuple, inputs: jax.Array, labels: jax.Array):
        params, batch_stats, opt_state = state
        (loss, batch_stats), grads = jax.value_and_grad(loss_of, has_aux=True)(
            params, batch_stats, inputs, labels
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    inputs, labels = zero_batch(num_labels, batch, backbone)
    holder = {"state": (params, batch_stats, tx.init(params))}

    def step() -> jax.Array:
        holder["state"], loss = train_step(holder["state"], inputs, labels)
        return loss

    return step, jax.block_until_ready


def device_description() -> str:
    device = jax.devices()[0]
    return f"jax {device.platform}: {getattr(device, 'device_kind', device.platform)}"
