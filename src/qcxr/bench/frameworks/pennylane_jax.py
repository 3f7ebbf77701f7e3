"""`pennylane-jax`: the paper's implementation, a Flax model whose DQC runs a PennyLane QNode
(default.qubit, JAX interface, backprop) inside the jitted training step (Sec. III-D)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qcxr.bench.frameworks import NUM_LAYERS, check_cell

VERSIONS = ("pennylane", "jax", "jaxlib", "flax", "optax", "numpy")


def _dense(num_labels: int):
    import flax.linen as nn

    # As qcxr.models.heads: Lecun normal kernels (Sec. III-F), zero biases.
    return nn.Dense(
        num_labels, kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros
    )


def classical_head(num_labels: int):
    """CDL: Dense(n) on the pooled features; no circuit, so the same model as qcxr's CDL."""
    return _dense(num_labels)


def pennylane_head(num_labels: int):
    """Flax DQC head: Dense(n) -> tanh * pi/2 -> QNode <Z> -> Dense(n), as DressedQuantumHead."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from qcxr.bench.frameworks.circuit import dqc_qnode

    circuit = dqc_qnode(num_labels, interface="jax")

    def uniform_angles(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, 0.0, 2 * jnp.pi)

    class PennyLaneDressedHead(nn.Module):
        @nn.compact
        def __call__(self, features):
            x = jnp.tanh(_dense(num_labels)(features)) * (jnp.pi / 2)
            weights = self.param("weights", uniform_angles, (NUM_LAYERS, num_labels))
            z = jnp.stack(circuit(x, weights), axis=-1).astype(jnp.float32)
            return _dense(num_labels)(z)

    return PennyLaneDressedHead()


def build_step(
    head: str, num_labels: int, batch: int, backbone: str, seed: int = 0, **options: Any
) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(step, sync) of one training step of the CDL or DQC model."""
    check_cell(head, num_labels, batch, backbone)
    from qcxr.bench.frameworks.flax_step import build_flax_step

    module = classical_head(num_labels) if head == "cdl" else pennylane_head(num_labels)
    return build_flax_step(module, num_labels, batch, backbone == "resnet50", seed)


def device() -> str:
    from qcxr.bench.frameworks.flax_step import device_description

    return device_description()
