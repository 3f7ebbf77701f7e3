"""The statevector simulator against references built from the circuit's written definition.

Every reference lives in circuit_reference.py and writes the CNOT list out itself: comparing
with qcxr's own backend="pennylane" would share ansatz.py with the code under test, so a wrong
entangler there would pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circuit_reference import (
    central_differences,
    cnots,
    entangler_image,
    numpy_expvals,
    numpy_expvals_and_grads,
    pennylane_expvals,
)
from qcxr.quantum import dqc_expvals
from qcxr.quantum import statevector as sv
from qcxr.quantum.ansatz import (
    basis_permutation,
    entangler_cnots,
    inverse_parity_masks,
    parity_masks,
    qubit_groups,
)
from qcxr.quantum.state_kernels import product_state

ENTANGLERS = ("ring", "chain", "none")
CASES = [(n, layers, ent) for n in (1, 2, 3, 5, 8, 12) for layers in (1, 3) for ent in ENTANGLERS]


def _inputs(n: int, layers: int, seed: int, batch: int = 3):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-np.pi / 2, np.pi / 2, (batch, n)), jnp.float32)
    w = jnp.asarray(rng.uniform(0, 2 * np.pi, (layers, n)), jnp.float32)
    return x, w


def _probe(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=n).astype(np.float32)


def _qcxr(entangler: str, backend: str = "statevector"):
    return lambda x, w: dqc_expvals(x, w, entangler=entangler, backend=backend)


def _reference(entangler: str):
    return lambda x, w: pennylane_expvals(x, w, entangler)


def _values_and_grads(expvals, x, w, *, jit: bool = False):
    """<Z>, then d/dx and d/dw of a random projection of it (every output enters the gradient).

    One forward pass serves both; jit=True compiles them as one program, which for the
    statevector simulator takes about half the time of compiling them op by op.
    """
    probe = jnp.asarray(_probe(x.shape[1]))

    def f(a, b):
        out, pull = jax.vjp(expvals, a, b)
        return (out, *pull(jnp.broadcast_to(probe, out.shape)))

    return (jax.jit(f) if jit else f)(x, w)


def _assert_matches_pennylane_reference(expvals, n: int, layers: int, entangler: str, seed: int):
    x, w = _inputs(n, layers, seed)
    ours, g_x, g_w = _values_and_grads(expvals, x, w, jit=True)
    ref, r_x, r_w = _values_and_grads(_reference(entangler), x, w)
    assert ours.shape == ref.shape == (x.shape[0], n)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(g_x, r_x, atol=1e-4)
    np.testing.assert_allclose(g_w, r_w, atol=1e-4)


@pytest.mark.parametrize(("n", "layers", "entangler"), CASES)
def test_matches_pennylane(n: int, layers: int, entangler: str) -> None:
    _assert_matches_pennylane_reference(_qcxr(entangler), n, layers, entangler, n * 10 + layers)


def test_pennylane_backend_matches_reference() -> None:
    """qcxr's backend="pennylane" (the paper's simulator in the benchmarks) builds the same circuit."""
    _assert_matches_pennylane_reference(_qcxr("ring", "pennylane"), 4, 2, "ring", seed=4)


def _statevector(entangler: str, **knobs):
    """The simulator itself with its tuning knobs (group_size, chunk, cycle) set."""
    return lambda x, w: sv.expvals(x, w, entangler, **knobs)


@pytest.mark.parametrize("entangler", ENTANGLERS)
def test_one_sample_chunks_match_pennylane(entangler: str) -> None:
    """Chunks of one sample (n >= 16 by default) cycle the qubit groups: another code path."""
    expvals = _statevector(entangler, chunk=1)
    _assert_matches_pennylane_reference(expvals, 8, 4, entangler, seed=84)


def test_layout_choices_do_not_change_results() -> None:
    """Chunking, fusion width and cycling are performance knobs only."""
    x, w = _inputs(9, 4, seed=3, batch=4)
    base = _values_and_grads(_qcxr("ring"), x, w, jit=True)
    for knobs in (
        {"chunk": 1, "group_size": 2},
        {"chunk": 2, "group_size": 3},
        {"chunk": 4, "group_size": 9},
        {"chunk": 3, "group_size": 20},  # rounded to a divisor of the batch (2); at most n
        {"chunk": 1, "cycle": False},
    ):
        got = _values_and_grads(_statevector("ring", **knobs), x, w, jit=True)
        np.testing.assert_allclose(got[0], base[0], atol=1e-6)
        np.testing.assert_allclose(got[1], base[1], atol=1e-5)
        np.testing.assert_allclose(got[2], base[2], atol=1e-5)


def test_knobs_resolve_to_the_measured_defaults() -> None:
    assert sv.default_group_size(9) == 4 and sv.default_group_size(3) == 3
    assert sv.group_size_for(9) == 4 and sv.group_size_for(9, 20) == 9
    assert sv.default_chunk(12, 32) == 32 and sv.default_chunk(15, 32) == 16
    assert sv.default_chunk(16, 32) == 1 and sv.default_chunk(14, 6) == 6
    assert sv.chunk_for(6, 4) == 3 and sv.chunk_for(7, 4) == 1 and sv.chunk_for(4, 0) == 1


# --- the references agree with each other -------------------------------------------------


@pytest.mark.parametrize("entangler", ENTANGLERS)
def test_numpy_reference_matches_pennylane_reference(entangler: str) -> None:
    """The float64 simulator and its adjoint, which check the large circuits below."""
    n, layers = 4, 3
    x, w = _inputs(n, layers, seed=7, batch=2)
    cotangent = np.broadcast_to(_probe(n), (2, n))
    values, d_x, d_w = numpy_expvals_and_grads(x, w, entangler, cotangent)
    ref, g_x, g_w = _values_and_grads(_reference(entangler), x, w)
    np.testing.assert_allclose(values, ref, atol=1e-5)
    np.testing.assert_allclose(numpy_expvals(x, w, entangler), values, atol=1e-12)
    np.testing.assert_allclose(d_x, g_x, atol=1e-4)
    np.testing.assert_allclose(d_w, g_w, atol=1e-4)


def test_numpy_adjoint_matches_central_differences() -> None:
    n, layers = 3, 2
    x, w = _inputs(n, layers, seed=11, batch=2)
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    cotangent = np.random.default_rng(0).normal(size=(2, n))
    _, d_x, d_w = numpy_expvals_and_grads(x, w, "ring", cotangent)
    fd_x, fd_w = central_differences(
        lambda a, b: np.sum(numpy_expvals(a, b, "ring") * cotangent), [x, w]
    )
    np.testing.assert_allclose(d_x, fd_x, atol=1e-8)
    np.testing.assert_allclose(d_w, fd_w, atol=1e-8)


# --- large circuits: the code paths that start above n = 12 -------------------------------


def _check_large(n: int, layers: int, entangler: str, batch: int, **knobs) -> None:
    x, w = _inputs(n, layers, seed=n, batch=batch)
    cotangent = np.broadcast_to(_probe(n), (batch, n))
    values, d_x, d_w = numpy_expvals_and_grads(x, w, entangler, cotangent)
    expvals = _statevector(entangler, **knobs) if knobs else _qcxr(entangler)
    ours, g_x, g_w = _values_and_grads(expvals, x, w, jit=True)
    np.testing.assert_allclose(ours, values, atol=1e-5)
    np.testing.assert_allclose(g_x, d_x, atol=1e-4)
    np.testing.assert_allclose(g_w, d_w, atol=1e-4)


@pytest.mark.parametrize("cycle", [True, False])
def test_tail_group_of_one_sample_matches_reference(cycle: bool) -> None:
    """n > 12 with one sample per chunk: the last 6 qubits form one group, applied by cycling
    the groups (default) or in place (cycle=False: the only user of that product form)."""
    n, batch = 13, 1
    assert sv.default_chunk(n, batch) == 1 and qubit_groups(n, 4, True)[-1] == 6
    _check_large(n, 3, "chain", batch, cycle=cycle)


def test_one_sample_chunks_by_default_match_reference() -> None:
    """From n = 16 a batch runs one sample per map step; the gather indices are still constants."""
    n, batch = 16, 2
    assert sv.default_chunk(n, batch) == 1 and n <= sv.CONSTANT_INDEX_QUBITS
    _check_large(n, 2, "ring", batch)


def test_on_the_fly_indices_match_reference() -> None:
    """Past CONSTANT_INDEX_QUBITS the gather indices are computed in the call; tail group too."""
    n, batch = 17, 2
    assert n > sv.CONSTANT_INDEX_QUBITS and sv.default_chunk(n, batch) == 1
    _check_large(n, 2, "ring", batch)


@pytest.mark.slow
@pytest.mark.parametrize("entangler", ["ring", "chain"])
@pytest.mark.parametrize("n", range(13, 21))
def test_large_circuits_match_reference(n: int, entangler: str) -> None:
    # One sample reaches the tail group for n = 13-15, where two samples share a chunk.
    _check_large(n, 3, entangler, batch=1 if n < 16 else 2)


# --- the ansatz helpers -------------------------------------------------------------------


@pytest.mark.parametrize("entangler", ENTANGLERS)
def test_entangler_cnots_follow_the_definition(entangler: str) -> None:
    for n in range(1, 10):
        assert entangler_cnots(n, entangler) == cnots(n, entangler)


def _bit(values: np.ndarray, n: int, k: int) -> np.ndarray:
    return (values >> (n - 1 - k)) & 1


def _parity(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values).astype(np.int64) & 1


@pytest.mark.parametrize(
    ("n", "entangler"),
    [(4, "ring"), (5, "chain"), (2, "ring"), (1, "ring"), (3, "none"), (10, "ring"), (9, "chain")],
)
def test_entangler_permutation_matches_cnot_sequence(n: int, entangler: str) -> None:
    """basis_permutation and the GF(2) masks equal the CNOTs applied to every basis index."""
    image = entangler_image(n, entangler)
    preimage = np.argsort(image)
    forward, inverse = basis_permutation(n, entangler)
    np.testing.assert_array_equal(forward, image)
    np.testing.assert_array_equal(inverse, preimage)
    index = np.arange(2**n, dtype=np.int64)
    masks, inverse_masks = parity_masks(n, entangler), inverse_parity_masks(n, entangler)
    assert len(masks) == len(inverse_masks) == n
    for k in range(n):
        np.testing.assert_array_equal(_parity(index & masks[k]), _bit(image, n, k))
        np.testing.assert_array_equal(_parity(index & inverse_masks[k]), _bit(preimage, n, k))


@pytest.mark.parametrize(("n", "entangler"), [(10, "ring"), (17, "ring"), (17, "chain")])
def test_gather_indices_match_cnot_sequence(n: int, entangler: str) -> None:
    """Constant (n <= 16) or computed on the fly: entangle gathers by the inverse image."""
    image = entangler_image(n, entangler)
    entangle, disentangle = sv.Circuit(n, 2, entangler, None, 1).indices()
    np.testing.assert_array_equal(entangle, np.argsort(image))
    np.testing.assert_array_equal(disentangle, image)


def test_ring_of_two_is_one_cnot() -> None:
    assert entangler_cnots(2, "ring") == [(0, 1)]
    assert entangler_cnots(1, "ring") == []
    assert entangler_cnots(4, "ring")[-1] == (3, 0)


# --- the rest of the contract -------------------------------------------------------------


def test_jit_and_vmap() -> None:
    x, w = _inputs(6, 3, seed=5, batch=4)
    direct = dqc_expvals(x, w)
    jitted = jax.jit(lambda a, b: dqc_expvals(a, b))(x, w)
    # vmap over a leading axis of several batches, each (B, n)
    stacked = jax.vmap(lambda a: dqc_expvals(a, w))(jnp.stack([x, x[::-1]]))
    np.testing.assert_allclose(jitted, direct, atol=1e-6)
    np.testing.assert_allclose(stacked[0], direct, atol=1e-6)
    np.testing.assert_allclose(stacked[1], direct[::-1], atol=1e-6)


def test_product_state_is_normalised_kronecker() -> None:
    angles = jnp.asarray(np.random.default_rng(0).uniform(0, 3, (2, 5)), jnp.float32)
    psi = np.asarray(product_state(angles))
    for c in range(2):
        ref = np.array([1.0])
        for a in np.asarray(angles[c]):
            ref = np.kron(ref, [np.cos(a / 2), np.sin(a / 2)])
        np.testing.assert_allclose(psi[:, c], ref, atol=1e-6)


def test_contract_errors() -> None:
    x, w = _inputs(3, 2, seed=0)
    with pytest.raises(ValueError, match="entangler"):
        dqc_expvals(x, w, entangler="star")
    with pytest.raises(ValueError, match="backend"):
        dqc_expvals(x, w, backend="qiskit")
    with pytest.raises(ValueError, match="same n"):
        dqc_expvals(x, w[:, :2])
