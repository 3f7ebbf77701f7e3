"""The same circuit as a PennyLane QNode: the paper's simulator, and this project's reference."""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp

from qcxr.quantum.ansatz import entangler_cnots


@lru_cache(maxsize=32)
def qnode(n: int, layers: int, entangler: str, device: str = "default.qubit", diff: str = "best"):
    """A JAX-interface QNode f(x (B, n), weights (L, n)) -> tuple of n arrays (B,)."""
    import pennylane as qml

    dev = qml.device(device, wires=n)

    @qml.qnode(dev, interface="jax", diff_method=diff)
    def circuit(x, weights):
        for i in range(n):
            qml.Hadamard(wires=i)
            qml.RY(x[..., i], wires=i)
        for layer in range(layers):
            for i in range(n):
                qml.RY(weights[layer, i], wires=i)
            for control, target in entangler_cnots(n, entangler):
                qml.CNOT(wires=[control, target])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    return circuit


def expvals(
    x: jax.Array, weights: jax.Array, entangler: str = "ring", device: str | None = None
) -> jax.Array:
    """<Z_i> for a batch, (B, n) -> (B, n): through PennyLane's parameter broadcasting, or one
    sample at a time on default.tensor, whose parameter-shift gradients refuse broadcasting."""
    x = jnp.asarray(x, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    device = device or "default.qubit"
    circuit = qnode(x.shape[-1], weights.shape[0], entangler, device)
    if device == "default.tensor":
        out = jnp.stack([jnp.stack(circuit(row, weights)) for row in x])
    else:
        out = jnp.stack(circuit(x, weights), axis=-1)
    return out.astype(jnp.float32)
