"""Simulation of the dressed quantum circuit: one contract, several backends."""

from __future__ import annotations

import jax

from qcxr.config import BACKENDS  # the choices of model.backend, defined once
from qcxr.quantum.ansatz import ENTANGLERS, entangler_cnots
from qcxr.quantum.cost import choose_backend


def dqc_expvals(
    x: jax.Array,
    weights: jax.Array,
    *,
    entangler: str = "ring",
    backend: str = "statevector",
    device: str | None = None,
) -> jax.Array:
    """<Z_i> of the dressed circuit (docs/ARCHITECTURE.md, "The quantum core").

    x: (B, n) embedding angles, already scaled; weights: (L, n). On every wire H then RY(x_i);
    then per layer RY(weights[l, i]) on every wire and the entangler ("ring", "chain", "none").
    Returns (B, n). Differentiable in x and weights; jit- and vmap-able. backend: "statevector"
    (2^n amplitudes), "mps" (exact matrix product state, any n), "auto" (the cheaper of the
    two, `choose_backend`), "pennylane" (a QNode on `device`, the reference).
    """
    if entangler not in ENTANGLERS:
        raise ValueError(f"unknown entangler {entangler!r}; choose one of {ENTANGLERS}")
    if x.ndim != 2 or weights.ndim != 2 or x.shape[1] != weights.shape[1]:
        raise ValueError(
            f"expected x (B, n) and weights (L, n) with the same n, got {x.shape} and {weights.shape}"
        )
    if backend == "auto":
        backend = choose_backend(x.shape[1], weights.shape[0], entangler)
    if backend == "statevector":
        from qcxr.quantum import statevector

        return statevector.expvals(x, weights, entangler)
    if backend == "mps":
        from qcxr.quantum import mps

        return mps.expvals(x, weights, entangler)
    if backend == "pennylane":
        from qcxr.quantum import pennylane_backend

        return pennylane_backend.expvals(x, weights, entangler, device)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


__all__ = ["BACKENDS", "ENTANGLERS", "choose_backend", "dqc_expvals", "entangler_cnots"]
