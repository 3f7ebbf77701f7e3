"""The statevector simulator against PennyLane default.qubit, the independent reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.quantum import dqc_expvals
from qcxr.quantum import statevector as sv
from qcxr.quantum.ansatz import basis_permutation, entangler_cnots, parity_masks

pytest.importorskip("pennylane")

CASES = [
    (n, layers, ent)
    for n in (1, 2, 3, 5, 8, 12)
    for layers in (1, 3)
    for ent in ("ring", "chain", "none")
]


def _inputs(n: int, layers: int, seed: int, batch: int = 3):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-np.pi / 2, np.pi / 2, (batch, n)), jnp.float32)
    w = jnp.asarray(rng.uniform(0, 2 * np.pi, (layers, n)), jnp.float32)
    return x, w


def _loss(backend: str, entangler: str, n: int):
    probe = jnp.asarray(np.random.default_rng(n).normal(size=n), jnp.float32)

    def f(x, w):
        return jnp.sum(dqc_expvals(x, w, entangler=entangler, backend=backend) * probe)

    return f


@pytest.mark.parametrize(("n", "layers", "entangler"), CASES)
def test_matches_pennylane(n: int, layers: int, entangler: str) -> None:
    x, w = _inputs(n, layers, seed=n * 10 + layers)
    ours = dqc_expvals(x, w, entangler=entangler)
    ref = dqc_expvals(x, w, entangler=entangler, backend="pennylane")
    assert ours.shape == ref.shape == (x.shape[0], n)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    g_ours = jax.grad(_loss("statevector", entangler, n), (0, 1))(x, w)
    g_ref = jax.grad(_loss("pennylane", entangler, n), (0, 1))(x, w)
    np.testing.assert_allclose(g_ours[0], g_ref[0], atol=1e-4)
    np.testing.assert_allclose(g_ours[1], g_ref[1], atol=1e-4)


@pytest.mark.parametrize("entangler", ["ring", "chain", "none"])
def test_one_sample_chunks_match_pennylane(monkeypatch: pytest.MonkeyPatch, entangler: str) -> None:
    """Chunks of one sample (n >= 16 by default) cycle the qubit groups: another code path."""
    monkeypatch.setenv("QCXR_SV_CHUNK", "1")
    sv._CIRCUITS.clear()
    try:
        test_matches_pennylane(8, 4, entangler)
    finally:
        sv._CIRCUITS.clear()


def test_layout_choices_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunking and fusion width are performance knobs only."""
    x, w = _inputs(9, 4, seed=3, batch=4)
    f = _loss("statevector", "ring", 9)
    base = (dqc_expvals(x, w), jax.grad(f, (0, 1))(x, w))
    for chunk, group in (("1", "2"), ("2", "3"), ("4", "9")):
        monkeypatch.setenv("QCXR_SV_CHUNK", chunk)
        monkeypatch.setenv("QCXR_SV_GROUP", group)
        sv._CIRCUITS.clear()
        np.testing.assert_allclose(dqc_expvals(x, w), base[0], atol=1e-6)
        for got, want in zip(jax.grad(f, (0, 1))(x, w), base[1], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
    sv._CIRCUITS.clear()


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
    psi = np.asarray(sv.product_state(angles))
    for c in range(2):
        ref = np.array([1.0])
        for a in np.asarray(angles[c]):
            ref = np.kron(ref, [np.cos(a / 2), np.sin(a / 2)])
        np.testing.assert_allclose(psi[:, c], ref, atol=1e-6)


def test_entangler_permutation_matches_cnot_sequence() -> None:
    """The GF(2) masks equal applying each CNOT to every basis index, in order."""
    for n, ent in ((4, "ring"), (5, "chain"), (2, "ring"), (3, "none"), (10, "ring")):
        forward, inverse = basis_permutation(n, ent)
        assert sorted(forward) == list(range(2**n))
        for b in range(2**n):
            bits = [(b >> (n - 1 - q)) & 1 for q in range(n)]
            for control, target in entangler_cnots(n, ent):
                bits[target] ^= bits[control]
            image = sum(bit << (n - 1 - q) for q, bit in enumerate(bits))
            assert forward[b] == image
            assert inverse[image] == b
        assert len(parity_masks(n, ent)) == n


def test_contract_errors() -> None:
    x, w = _inputs(3, 2, seed=0)
    with pytest.raises(ValueError, match="entangler"):
        dqc_expvals(x, w, entangler="star")
    with pytest.raises(ValueError, match="backend"):
        dqc_expvals(x, w, backend="qiskit")
    with pytest.raises(ValueError, match="same n"):
        dqc_expvals(x, w[:, :2])


def test_ring_of_two_is_one_cnot() -> None:
    assert entangler_cnots(2, "ring") == [(0, 1)]
    assert entangler_cnots(1, "ring") == []
    assert entangler_cnots(4, "ring")[-1] == (3, 0)


@pytest.mark.parametrize("entangler", ["ring", "chain"])
def test_on_the_fly_indices_equal_the_checked_permutation(entangler: str) -> None:
    """Above CONSTANT_INDEX_QUBITS the gather indices come from permuted_index, not constants."""
    n = 10
    forward, inverse = basis_permutation(n, entangler)
    circuit = sv.Circuit(n, 2, entangler, None, 1)
    np.testing.assert_array_equal(sv.permuted_index(n, circuit.inverse_masks), inverse)
    np.testing.assert_array_equal(sv.permuted_index(n, circuit.masks), forward)
