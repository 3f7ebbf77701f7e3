"""This project's exact statevector simulator for the dressed-circuit family.

The circuit (docs/ARCHITECTURE.md, "The quantum core") on every wire i: H, RY(x_i); then L
times: RY(w_l,i) on every wire, then the entangler; measure <Z_i>. Since H|0> = RY(pi/2)|0> and
rotations about one axis add, everything before the first entangler is the product state
prod_i RY(pi/2 + x_i + w_0,i)|0>. All gates are real, so amplitudes are real float32.

A batch runs chunk by chunk under `lax.map`, each chunk a (2**n, c) state (the kernels are in
qcxr.quantum.state_kernels): rotation layers as fused group products, the entangler as a gather
of basis rows, the last entangler folded into the measurement. Gradients come from a custom VJP
that runs the circuit backwards (every gate is orthogonal): memory stays a few statevectors per
chunk whatever the depth, and nothing of size 2**n x n is ever formed.

Three tuning knobs, arguments of `expvals` (defaults: measured, see `default_group_size` and
`default_chunk`), change speed only, never a result: `group_size` (qubits per fused rotation),
`chunk` (samples per map step) and `cycle` (one-sample chunks rotate their groups by cycling).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from qcxr.quantum.ansatz import (
    basis_permutation,
    inverse_parity_masks,
    parity_masks,
    qubit_groups,
)
from qcxr.quantum.state_kernels import (
    group_matrices,
    parity_expvals,
    permuted_index,
    product_state,
    rotate,
    rotate_back_with_grads,
)

CONSTANT_INDEX_QUBITS = 16  # up to here the entangler's gather indices are constants (256 KiB)


class Circuit:
    """Static description of one circuit shape: n qubits, L layers, entangler, and how it runs:
    fusion groups (of up to `group_size` qubits), samples per map step, cycling."""

    def __init__(
        self,
        n: int,
        layers: int,
        entangler: str,
        group_size: int | None,
        chunk: int,
        cycle: bool = True,
    ):
        self.n, self.layers, self.entangler, self.chunk = n, layers, entangler, chunk
        self.cycle = cycle
        self.groups = qubit_groups(n, group_size_for(n, group_size), chunk == 1)
        self.masks = parity_masks(n, entangler)
        self.inverse_masks = inverse_parity_masks(n, entangler)
        self.identity = all(m == 1 << (n - 1 - k) for k, m in enumerate(self.masks))

    def indices(self) -> tuple[jax.Array, jax.Array] | None:
        """(entangle, disentangle) gather indices; computed once per call, outside the map."""
        if self.identity:
            return None
        if self.n <= CONSTANT_INDEX_QUBITS:
            # Constants: computed on the fly, XLA fuses the index arithmetic into the gather
            # and repeats it for every sample of a chunk (a step at n = 14 ran 1.15x slower).
            forward, inverse = basis_permutation(self.n, self.entangler)
            return jnp.asarray(inverse), jnp.asarray(forward)
        return permuted_index(self.n, self.inverse_masks), permuted_index(self.n, self.masks)

    @staticmethod
    def entangle(psi: jax.Array, indices) -> jax.Array:
        """psi after the entangler: new[b'] = psi[M^-1 b'] (rows of (2**n, c))."""
        return psi if indices is None else psi[indices[0]]

    @staticmethod
    def disentangle(psi: jax.Array, indices) -> jax.Array:
        """The entangler undone: old[b] = new[M b]."""
        return psi if indices is None else psi[indices[1]]

    def matrices(self, thetas: jax.Array) -> list[list[jax.Array]]:
        """Group matrices of layers 1..L-1, built once per call outside the per-chunk loop
        (inside it XLA fuses their Kronecker products into the state products: a layer ran
        1.6x slower)."""
        return [group_matrices(theta, self.groups) for theta in thetas]

    def evolve(self, angles: jax.Array, mats: list[list[jax.Array]], indices) -> jax.Array:
        """States (2**n, c) before the last entangler; angles (c, n); mats: see matrices."""
        psi = product_state(angles)
        for layer_mats in mats:
            psi = rotate(self.entangle(psi, indices), layer_mats, self.groups, self.cycle)
        return psi

    def measure(self, psi: jax.Array) -> jax.Array:
        return parity_expvals(psi, self.masks)

    def backward(
        self, angles: jax.Array, mats: list[list[jax.Array]], psi: jax.Array, cotangent, indices
    ) -> tuple[jax.Array, jax.Array]:
        """(d/d angles (c, n), d/d thetas summed over the chunk), running the circuit in reverse."""
        _, measure_vjp = jax.vjp(self.measure, psi)
        (lam,) = measure_vjp(cotangent)
        grads = []
        for layer in reversed(range(self.layers - 1)):
            psi, lam, grad = rotate_back_with_grads(
                psi, lam, mats[layer], self.groups, need_psi=layer > 0, cycle=self.cycle
            )
            grads.append(grad)
            lam = self.disentangle(lam, indices)
            if layer > 0:
                psi = self.disentangle(psi, indices)
        _, state_vjp = jax.vjp(product_state, angles)
        (d_angles,) = state_vjp(lam)
        d_thetas = jnp.stack(grads[::-1]) if grads else jnp.zeros((0, self.n), lam.dtype)
        return d_angles, d_thetas


def default_group_size(n: int) -> int:
    """Fusion width k: a (2^k x 2^k) product per group of k qubits."""
    return min(n, 4)


def group_size_for(n: int, group_size: int | None = None) -> int:
    """The fusion width of an n-qubit circuit: `group_size` (at most n), else the default."""
    return min(n, group_size) if group_size else default_group_size(n)


def default_chunk(n: int, batch: int) -> int:
    """Samples per map step (a divisor of the batch): the chunk's states stay within cache.

    From n = 16 on, one sample per step: its groups run as plain products that cycle the
    qubits, while a chunk of 2-8 samples last makes every group a batched product over rows
    of 2-8 floats (measured per step, batch 32: n = 16 1.2x, n = 17 2.1x, n = 18 22x slower).
    """
    return 1 if n >= 16 else chunk_for(batch, 2 ** (19 - n))


def chunk_for(batch: int, target: int) -> int:
    """The largest divisor of `batch` that is at most `target` (and at least 1)."""
    chunk = max(1, min(batch, target))
    while batch % chunk:
        chunk -= 1
    return chunk


def _split(xs, chunk: int):
    """Every array of xs with its leading (batch) axis split into (batch // chunk, chunk)."""
    return jax.tree.map(lambda a: a.reshape(a.shape[0] // chunk, chunk, *a.shape[1:]), xs)


def _merge(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _expvals(angles: jax.Array, thetas: jax.Array, circuit: Circuit) -> jax.Array:
    return _expvals_fwd(angles, thetas, circuit)[0]


def _expvals_fwd(angles, thetas, circuit):
    indices, mats = circuit.indices(), circuit.matrices(thetas)

    def one(a):
        psi = circuit.evolve(a, mats, indices)
        return circuit.measure(psi), psi.T  # (c, n), (c, 2**n)

    expvals, psi = jax.lax.map(one, _split(angles, circuit.chunk))
    return _merge(expvals), (angles, thetas, _merge(psi))


def _expvals_bwd(circuit, residuals, cotangent):
    angles, thetas, psi = residuals
    # Recomputed rather than saved: the backward uses only the inverse permutation, and holding
    # both index arrays (2^n int32 each) from forward to backward costs memory at large n.
    indices, mats = circuit.indices(), circuit.matrices(thetas)

    def one(args):
        a, p, g = args
        d_angles, d_thetas = circuit.backward(a, mats, p.T, g, indices)
        # lax.map cannot stack zero-size outputs: one-layer circuits return no theta grads.
        return (d_angles, d_thetas) if circuit.layers > 1 else (d_angles,)

    grads = jax.lax.map(one, _split((angles, psi, cotangent), circuit.chunk))
    d_thetas = grads[1].sum(axis=0) if circuit.layers > 1 else jnp.zeros_like(thetas)
    return _merge(grads[0]), d_thetas


_expvals.defvjp(_expvals_fwd, _expvals_bwd)

_CIRCUITS: dict[tuple, Circuit] = {}


def circuit_for(
    n: int,
    layers: int,
    entangler: str,
    group_size: int | None = None,
    chunk: int = 1,
    cycle: bool = True,
) -> Circuit:
    key = (n, layers, entangler, group_size_for(n, group_size), chunk, cycle)
    if key not in _CIRCUITS:
        _CIRCUITS[key] = Circuit(n, layers, entangler, group_size, chunk, cycle)
    return _CIRCUITS[key]


def expvals(
    x: jax.Array,
    weights: jax.Array,
    entangler: str = "ring",
    group_size: int | None = None,
    *,
    chunk: int | None = None,
    cycle: bool = True,
) -> jax.Array:
    """<Z_i> of the dressed circuit for a batch: x (B, n) angles, weights (L, n) -> (B, n).

    Tuning only (the result does not depend on them): `group_size` qubits per fused rotation
    (default `default_group_size`); `chunk` samples per map step, rounded down to a divisor of
    the batch (default `default_chunk`); `cycle`: one-sample chunks rotate their groups by
    cycling them to the front (False: in place, a slower form kept for comparison).
    """
    x = jnp.asarray(x, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    n, layers, batch = x.shape[-1], weights.shape[0], x.shape[0]
    chunk = chunk_for(batch, chunk) if chunk else default_chunk(n, batch)
    circuit = circuit_for(n, layers, entangler, group_size, chunk, cycle)
    angles = x + weights[0] + jnp.pi / 2  # H|0> = RY(pi/2)|0>; layer-0 RY adds to the embedding
    return _expvals(angles, weights[1:], circuit)
