"""The dressed circuit built from its written definition (docs/ARCHITECTURE.md, "The quantum core"), for the tests.

Nothing here imports qcxr: a change to qcxr's circuit (ansatz.py, a backend) must show up as a
disagreement with this module rather than be copied into the reference.

    x: (B, n) angles, weights: (L, n). On every wire i: H, then RY(x[:, i]). Then for each layer
    l: RY(weights[l, i]) on every wire, then the entangler: "ring" = CNOT(i, (i+1) % n) for
    i = 0..n-1 in that order (one CNOT(0, 1) when n == 2, none when n == 1); "chain" =
    CNOT(i, i+1) for i = 0..n-2; "none". Returns <Z_i> for every wire, shape (B, n).
    Qubit 0 is the most significant bit of a basis index (PennyLane's wire order).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def cnots(n: int, entangler: str) -> list[tuple[int, int]]:
    """(control, target) pairs of one entangler, in application order."""
    if entangler == "ring":
        if n == 1:
            return []
        if n == 2:
            return [(0, 1)]
        return [(i, (i + 1) % n) for i in range(n)]
    if entangler == "chain":
        return [(i, i + 1) for i in range(n - 1)]
    if entangler == "none":
        return []
    raise ValueError(entangler)


def entangler_image(n: int, entangler: str) -> np.ndarray:
    """image[b]: the basis index b after the entangler, for every b (qubit 0 most significant)."""
    index = np.arange(2**n, dtype=np.int64)
    for control, target in cnots(n, entangler):
        index = index ^ (((index >> (n - 1 - control)) & 1) << (n - 1 - target))
    return index


# --- PennyLane default.qubit -------------------------------------------------------------


@lru_cache(maxsize=64)
def _qnode(n: int, layers: int, entangler: str, diff: str):
    import pennylane as qml

    @qml.qnode(
        qml.device("default.qubit", wires=n),
        interface="jax",
        diff_method=diff,
        device_vjp=diff == "adjoint",
    )
    def circuit(x, weights):
        for i in range(n):
            qml.Hadamard(wires=i)
            qml.RY(x[..., i], wires=i)
        for layer in range(layers):
            for i in range(n):
                qml.RY(weights[layer, i], wires=i)
            for control, target in cnots(n, entangler):
                qml.CNOT(wires=[control, target])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    return circuit


def pennylane_expvals(x, weights, entangler: str, *, diff: str = "adjoint"):
    """<Z_i> (B, n) from a JAX-interface QNode with parameter broadcasting: jax.grad works.

    diff="adjoint" runs the device in numpy and pulls back one cotangent per sample
    (device_vjp); "backprop" runs every gate as an eager JAX op, compiled on first use per wire
    and shape (about 5x slower for a new circuit at n = 12).
    """
    import jax.numpy as jnp

    circuit = _qnode(x.shape[-1], weights.shape[0], entangler, diff)
    return jnp.stack(circuit(x, weights), axis=-1)


# --- plain numpy, float64, gate by gate --------------------------------------------------

_H = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0)


def _ry(theta: float) -> np.ndarray:
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    return np.array([[c, -s], [s, c]])


def _d_ry(theta: float) -> np.ndarray:
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    return 0.5 * np.array([[-s, -c], [c, -s]])


def _gates(x_row: np.ndarray, weights: np.ndarray, entangler: str):
    """The circuit as (kind, wires, parameter); parameter is ("x", i) or ("w", l, i) for RY."""
    n = len(x_row)
    ops = []
    for i in range(n):
        ops.append(("H", (i,), None))
        ops.append(("RY", (i,), ("x", i)))
    for layer in range(weights.shape[0]):
        for i in range(n):
            ops.append(("RY", (i,), ("w", layer, i)))
        for control, target in cnots(n, entangler):
            ops.append(("CNOT", (control, target), None))
    return ops


def _apply_1q(psi: np.ndarray, mat: np.ndarray, wire: int) -> np.ndarray:
    return np.moveaxis(np.tensordot(mat, psi, axes=([1], [wire])), 0, wire)


def _apply_cnot(psi: np.ndarray, control: int, target: int) -> np.ndarray:
    """Flip the target where the control is 1. A permutation and its own inverse/transpose."""
    out = psi.copy()
    sel = [slice(None)] * psi.ndim
    sel[control] = 1
    sub = psi[tuple(sel)]  # the control axis is gone from the view
    out[tuple(sel)] = np.flip(sub, axis=target - (target > control))
    return out


def _apply(psi, kind, wires, theta, *, transpose=False):
    if kind == "H":
        return _apply_1q(psi, _H, wires[0])
    if kind == "RY":
        return _apply_1q(psi, _ry(-theta if transpose else theta), wires[0])
    return _apply_cnot(psi, *wires)


def _z_signs(n: int, wire: int) -> np.ndarray:
    """+1 where the wire's bit is 0, -1 where it is 1, broadcastable against a (2,)*n state."""
    shape = [1] * n
    shape[wire] = 2
    return np.array([1.0, -1.0]).reshape(shape)


def _value(param, x_row, weights):
    return x_row[param[1]] if param[0] == "x" else weights[param[1], param[2]]


def _run_one(x_row: np.ndarray, weights: np.ndarray, entangler: str):
    n = len(x_row)
    ops = _gates(x_row, weights, entangler)
    psi = np.zeros((2,) * n)
    psi[(0,) * n] = 1.0
    for kind, wires, param in ops:
        psi = _apply(psi, kind, wires, None if param is None else _value(param, x_row, weights))
    probs = psi * psi
    axes = set(range(n))
    z = np.array([np.sum(probs.sum(axis=tuple(axes - {i})) * [1.0, -1.0]) for i in range(n)])
    return psi, ops, z


def numpy_expvals(x, weights, entangler: str) -> np.ndarray:
    """<Z_i> (B, n) in float64."""
    x, weights = np.asarray(x, np.float64), np.asarray(weights, np.float64)
    return np.stack([_run_one(row, weights, entangler)[2] for row in x])


def numpy_expvals_and_grads(x, weights, entangler: str, cotangent):
    """(<Z_i> (B, n), d/dx (B, n), d/dweights (L, n)) of sum(cotangent * <Z>), float64.

    Adjoint method: with psi_k = U_k psi_{k-1} and lam the adjoint state (O psi at the end,
    O = sum_i c_i Z_i), dLoss/dtheta_k = 2 <lam_k, dU_k psi_{k-1}>; every gate is real and
    orthogonal, so both states are run back with U_k^T.
    """
    x, weights = np.asarray(x, np.float64), np.asarray(weights, np.float64)
    cotangent = np.asarray(cotangent, np.float64)
    n = x.shape[1]
    values, d_x, d_w = [], np.zeros_like(x), np.zeros_like(weights)
    for b, row in enumerate(x):
        psi, ops, z = _run_one(row, weights, entangler)
        values.append(z)
        lam = psi * sum(cotangent[b, i] * _z_signs(n, i) for i in range(n))
        for kind, wires, param in reversed(ops):
            theta = None if param is None else _value(param, row, weights)
            psi = _apply(psi, kind, wires, theta, transpose=True)  # psi_{k-1}
            if param is not None:
                grad = 2 * np.sum(lam * _apply_1q(psi, _d_ry(theta), wires[0]))
                if param[0] == "x":
                    d_x[b, param[1]] += grad
                else:
                    d_w[param[1], param[2]] += grad
            lam = _apply(lam, kind, wires, theta, transpose=True)
    return np.stack(values), d_x, d_w


def central_differences(f, args: list[np.ndarray], h: float = 1e-5) -> list[np.ndarray]:
    """d f / d args, entry by entry, for a scalar f of float64 arrays (small cases only)."""
    grads = []
    for k, a in enumerate(args):
        g = np.zeros_like(a, np.float64)
        for idx in np.ndindex(a.shape):
            shifted = []
            for sign in (1.0, -1.0):
                moved = [np.array(v, np.float64) for v in args]
                moved[k][idx] += sign * h
                shifted.append(f(*moved))
            g[idx] = (shifted[0] - shifted[1]) / (2 * h)
        grads.append(g)
    return grads
