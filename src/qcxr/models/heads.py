"""Classification heads on pooled backbone features (Sec. III-C, Figs. 1-2, Table II)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.config import HEADS
from qcxr.quantum import dqc_expvals


def uniform_angles(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Circuit weights uniform in [0, 2*pi) (Sec. III-F)."""
    return jax.random.uniform(key, shape, dtype, 0.0, 2 * jnp.pi)


def _dense(features: int, name: str) -> nn.Dense:
    # Sec. III-F: "the default method (Lecun normal)"; Flax's default bias init is zeros.
    return nn.Dense(features, kernel_init=nn.initializers.lecun_normal(), name=name)


class ClassicalHead(nn.Module):
    """CDL: one Dense layer of size n on the pooled features; logits (sigmoid in the loss)."""

    num_labels: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return _dense(self.num_labels, "preprocess")(features)


class DressedQuantumHead(nn.Module):
    """DQC: Dense(n) -> tanh * pi/2 -> circuit <Z_i> -> Dense(n) -> logits (Sec. III-C.2)."""

    num_labels: int
    num_layers: int = 3
    entangler: str = "ring"
    backend: str = "auto"  # beyond the paper: statevector or mps by cost (qcxr.quantum)
    device: str | None = None  # backend "pennylane" only: the PennyLane device

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        n = self.num_labels
        angles = jnp.tanh(_dense(n, "preprocess")(features)) * (jnp.pi / 2)
        weights = self.param("circuit", uniform_angles, (self.num_layers, n))
        expvals = dqc_expvals(
            angles, weights, entangler=self.entangler, backend=self.backend, device=self.device
        )
        return _dense(n, "postprocess")(expvals)


def make_head(
    head: str,
    num_labels: int,
    *,
    num_layers: int = 3,
    entangler: str = "ring",
    backend: str = "auto",
) -> nn.Module:
    """The head named in a config: "cdl" or "dqc"."""
    if head == "cdl":
        return ClassicalHead(num_labels)
    if head == "dqc":
        return DressedQuantumHead(num_labels, num_layers, entangler, backend)
    raise ValueError(f"model.head: unknown head {head!r}; choose from {HEADS}")
