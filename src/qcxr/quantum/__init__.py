"""Simulation of the dressed quantum circuit: one contract, several backends."""

from __future__ import annotations

import jax

from qcxr.quantum.ansatz import ENTANGLERS, entangler_cnots

BACKENDS = ("statevector", "pennylane")


def dqc_expvals(
    x: jax.Array,
    weights: jax.Array,
    *,
    entangler: str = "ring",
    backend: str = "statevector",
    device: str | None = None,
) -> jax.Array:
    """<Z_i> of the dressed circuit (DESIGN.md contract).

    x: (B, n) embedding angles, already scaled; weights: (L, n). On every wire H then RY(x_i);
    then per layer RY(weights[l, i]) on every wire and the entangler ("ring", "chain", "none").
    Returns (B, n). Differentiable in x and weights; jit- and vmap-able.
    """
    if entangler not in ENTANGLERS:
        raise ValueError(f"unknown entangler {entangler!r}; choose one of {ENTANGLERS}")
    if x.ndim != 2 or weights.ndim != 2 or x.shape[1] != weights.shape[1]:
        raise ValueError(
            f"expected x (B, n) and weights (L, n) with the same n, got {x.shape} and {weights.shape}"
        )
    if backend == "statevector":
        from qcxr.quantum import statevector

        return statevector.expvals(x, weights, entangler)
    if backend == "pennylane":
        from qcxr.quantum import pennylane_backend

        return pennylane_backend.expvals(x, weights, entangler, device)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


__all__ = ["BACKENDS", "ENTANGLERS", "dqc_expvals", "entangler_cnots"]
