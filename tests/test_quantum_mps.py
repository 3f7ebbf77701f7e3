"""The exact MPS backend against references built from the circuit's written definition:
PennyLane default.qubit (tests/circuit_reference.py), the statevector backend at n = 16-20, and
quimb's MPS circuit simulator at n >= 26, where no statevector fits."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circuit_reference import cnots, numpy_expvals_and_grads, pennylane_expvals
from qcxr.quantum import choose_backend, dqc_expvals
from qcxr.quantum.mpo import bond_dimension, entangler_mpo

ENTANGLERS = ("ring", "chain", "none")


def _inputs(n: int, layers: int, seed: int, batch: int = 3, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-np.pi / 2, np.pi / 2, (batch, n)), dtype)
    w = jnp.asarray(rng.uniform(0, 2 * np.pi, (layers, n)), dtype)
    probe = jnp.asarray(rng.normal(size=(batch, n)), dtype)
    return x, w, probe


def _value_and_grads(expvals, x, w, probe):
    """<Z> and the gradients of sum(probe * <Z>) in x and w, from one forward pass."""
    value, pullback = jax.vjp(expvals, x, w)
    return value, pullback(probe)


def _mps(entangler: str):
    # One compiled function for value and gradients: compiling dominates these small cases.
    def both(x, w, probe):
        return _value_and_grads(
            lambda x, w: dqc_expvals(x, w, entangler=entangler, backend="mps"), x, w, probe
        )

    return jax.jit(both)


# --- the entangler as an MPO ------------------------------------------------------------


def _mpo_matrix(mpo: np.ndarray) -> np.ndarray:
    """Contract the (n, D, 2, 2, D) MPO into its 2^n x 2^n matrix, qubit 0 most significant."""
    n = mpo.shape[0]
    out = mpo[0, :1]  # left boundary bond 0: (1, out, in, D)
    for j in range(1, n):
        out = np.einsum("aijd,dkle->aikjle", out, mpo[j]).reshape(1, 2**j * 2, 2**j * 2, -1)
    return out[0, :, :, 0]


def _cnot_matrix(n: int, entangler: str) -> np.ndarray:
    matrix = np.eye(2**n, dtype=np.int64)
    for control, target in cnots(n, entangler):
        gate = np.zeros_like(matrix)
        for b in range(2**n):
            flip = (b >> (n - 1 - control) & 1) << (n - 1 - target)
            gate[b ^ flip, b] = 1
        matrix = gate @ matrix
    return matrix


@pytest.mark.parametrize(("n", "entangler"), itertools.product(range(1, 8), ENTANGLERS))
def test_mpo_is_the_entangler(n: int, entangler: str) -> None:
    np.testing.assert_array_equal(
        _mpo_matrix(entangler_mpo(n, entangler).astype(np.int64)), _cnot_matrix(n, entangler)
    )


@pytest.mark.parametrize("n", [3, 8, 45])
def test_bond_dimensions(n: int) -> None:
    """A running parity and the wrap-around bit for the ring; the parity alone for the chain."""
    assert bond_dimension(n, "ring") == 4
    assert bond_dimension(n, "chain") == 2
    assert bond_dimension(n, "none") == 1


# --- against PennyLane default.qubit -----------------------------------------------------

# Every (n, L, entangler) of the agreement matrix runs under `make test-all`; each is a compile
# of its own (~2 s), so the fast suite keeps a sample: the paper's L = 3 at n = 2, 5 and 12 for
# every entangler, and every other L for the ring at n = 5.
FAST = {(n, 3, e) for n in (2, 5, 12) for e in ENTANGLERS} | {(5, k, "ring") for k in (1, 2, 4)}
CASES = [
    case if case in FAST else pytest.param(*case, marks=pytest.mark.slow)
    for case in itertools.product((1, 2, 3, 5, 8, 12), (1, 2, 3, 4), ENTANGLERS)
]


@pytest.mark.parametrize(("n", "layers", "entangler"), CASES)
def test_matches_pennylane(n: int, layers: int, entangler: str) -> None:
    x, w, probe = _inputs(n, layers, seed=100 * n + 10 * layers + len(entangler))
    ours, (gx, gw) = _mps(entangler)(x, w, probe)
    ref, (rx, rw) = _value_and_grads(lambda x, w: pennylane_expvals(x, w, entangler), x, w, probe)
    assert ours.shape == (3, n) and ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(gx, rx, atol=1e-4)
    np.testing.assert_allclose(gw, rw, atol=1e-4)


# --- against the statevector backend where both reach ------------------------------------


@pytest.mark.parametrize(
    ("n", "entangler"),
    [
        (16, "ring"),
        pytest.param(17, "chain", marks=pytest.mark.slow),
        pytest.param(16, "none", marks=pytest.mark.slow),
        pytest.param(19, "ring", marks=pytest.mark.slow),
        pytest.param(20, "ring", marks=pytest.mark.slow),
    ],
)
def test_matches_statevector(n: int, entangler: str) -> None:
    x, w, probe = _inputs(n, 3, seed=n, batch=2)
    ours, grads = _mps(entangler)(x, w, probe)
    ref, ref_grads = _value_and_grads(
        jax.jit(lambda x, w: dqc_expvals(x, w, entangler=entangler)), x, w, probe
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_float64_under_x64() -> None:
    with jax.enable_x64(True):
        x, w, probe = _inputs(7, 3, seed=7, dtype=jnp.float64)
        ours, (gx, gw) = _mps("ring")(x, w, probe)
        ref, rx, rw = numpy_expvals_and_grads(np.asarray(x), np.asarray(w), "ring", probe)
        assert ours.dtype == jnp.float64
        np.testing.assert_allclose(ours, ref, atol=1e-12)
        np.testing.assert_allclose(gx, rx, atol=1e-11)
        np.testing.assert_allclose(gw, rw, atol=1e-11)


def test_vmap_over_batches_equals_one_call() -> None:
    x, w, _ = _inputs(3, 2, seed=3, batch=4)
    stacked = jax.vmap(lambda xb: dqc_expvals(xb, w, backend="mps"))(x.reshape(2, 2, 3))
    np.testing.assert_allclose(stacked.reshape(4, 3), dqc_expvals(x, w, backend="mps"), atol=1e-6)


# --- against quimb, past any statevector -------------------------------------------------


def _quimb_expvals(x: np.ndarray, w: np.ndarray, entangler: str) -> np.ndarray:
    """<Z_i> of one sample from quimb's CircuitMPS in float64, built gate by gate."""
    import quimb.tensor as qtn

    n = x.shape[0]
    # cutoff 1e-13 drops only numerically zero singular values (the exact bond is <= 16).
    circuit = qtn.CircuitMPS(n, dtype="float64", cutoff=1e-13)
    for i in range(n):
        circuit.apply_gate("H", i)
        circuit.apply_gate("RY", float(x[i]), i)
    for layer in w:
        for i in range(n):
            circuit.apply_gate("RY", float(layer[i]), i)
        for control, target in cnots(n, entangler):
            circuit.apply_gate("CNOT", control, target)
    z = np.diag([1.0, -1.0])
    return np.array([circuit.local_expectation(z, i).real for i in range(n)])


# quimb runs 9 circuits per case: ~30 s at n = 26 (fast suite), ~40 s at n = 45.
@pytest.mark.parametrize(
    ("n", "entangler"),
    [
        (26, "ring"),
        pytest.param(45, "ring", marks=pytest.mark.slow),
        pytest.param(30, "chain", marks=pytest.mark.slow),
    ],
)
def test_matches_quimb_beyond_statevectors(n: int, entangler: str) -> None:
    with jax.enable_x64(True):
        x, w, _ = _inputs(n, 3, seed=n, batch=1, dtype=jnp.float64)
        ours = np.asarray(dqc_expvals(x, w, entangler=entangler, backend="mps"))[0]
        xs, ws = np.asarray(x)[0], np.asarray(w)
        np.testing.assert_allclose(ours, _quimb_expvals(xs, ws, entangler), atol=1e-10)
        # Gradients: central differences of quimb's values in a few coordinates.
        grad_x, grad_w = jax.grad(
            lambda x, w: dqc_expvals(x, w, entangler=entangler, backend="mps")[0, n // 2], (0, 1)
        )(x, w)
        h = 1e-5
        for i in (0, n - 1):
            step = np.zeros(n)
            step[i] = h
            fd = (
                _quimb_expvals(xs + step, ws, entangler)[n // 2]
                - _quimb_expvals(xs - step, ws, entangler)[n // 2]
            ) / (2 * h)
            np.testing.assert_allclose(grad_x[0, i], fd, atol=1e-7)
            steps = np.zeros_like(ws)
            steps[1, i] = h
            fd = (
                _quimb_expvals(xs, ws + steps, entangler)[n // 2]
                - _quimb_expvals(xs, ws - steps, entangler)[n // 2]
            ) / (2 * h)
            np.testing.assert_allclose(grad_w[1, i], fd, atol=1e-7)


# --- the automatic choice ------------------------------------------------------------------


def test_auto_picks_statevector_small_and_mps_large() -> None:
    assert choose_backend(4, 3, "ring") == "statevector"
    assert choose_backend(45, 3, "ring") == "mps"
    x, w, _ = _inputs(26, 3, seed=1, batch=2)
    np.testing.assert_allclose(
        dqc_expvals(x, w, backend="auto"), dqc_expvals(x, w, backend="mps"), atol=0
    )
