"""This project's exact statevector simulator for the dressed-circuit family.

The circuit (DESIGN.md contract) on every wire i: H, RY(x_i); then L times: RY(w_l,i) on every
wire, then the entangler; measure <Z_i>. Since H|0> = RY(pi/2)|0> and rotations about one axis
add, everything before the first entangler is the product state prod_i RY(pi/2 + x_i + w_0,i)|0>.
All gates are real, so amplitudes are real float32.

States are held as (2**n, c): basis index first (qubit 0 most significant), a chunk of c samples
last, so every kernel works on contiguous runs of c floats and chunks stay in cache. A layer of
single-qubit rotations is one small matrix product per group of qubits, in a form XLA runs
without transposing the state; with one sample per chunk (n >= 16) each group, from the last
up, is rotated by a plain product that also moves it to the front, so that after the layer the
qubits are back in order. The entangler is a gather of basis rows; the last entangler is folded
into the measurement, where Z_k after it is a parity of Z's. Gradients come from a custom VJP
that runs the circuit backwards (every gate is orthogonal): memory stays a few statevectors per
chunk whatever the depth, and nothing of size 2**n x n is ever formed.
"""

from __future__ import annotations

import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.ansatz import (
    basis_permutation,
    inverse_parity_masks,
    parity_masks,
    qubit_groups,
)

HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes for circuit matrix products
CONSTANT_INDEX_QUBITS = 16  # up to here the entangler's gather indices are constants (256 KiB)


def _ry(theta: jax.Array) -> jax.Array:
    c, s = jnp.cos(theta / 2), jnp.sin(theta / 2)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


def _kron_all(mats: list[jax.Array]) -> jax.Array:
    out = mats[0]
    for m in mats[1:]:
        out = jnp.kron(out, m)
    return out


def _kron_tree(vecs: list[jax.Array]) -> jax.Array:
    """Kronecker product of (2, c) factors as (2**len, c), first factor most significant."""
    while len(vecs) > 1:
        pairs = [
            (u[:, None, :] * v[None, :, :]).reshape(-1, u.shape[-1])
            for u, v in zip(vecs[0::2], vecs[1::2], strict=False)
        ]
        vecs = pairs + ([vecs[-1]] if len(vecs) % 2 else [])
    return vecs[0]


def _halves(angles: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The product states of the top and bottom halves of the qubits, (2^a, c) and (2^b, c)."""
    half = angles.shape[1] // 2
    # The barrier keeps XLA from fusing cos/sin into the products (n transcendentals per entry).
    trig = jax.lax.optimization_barrier(jnp.stack([jnp.cos(angles / 2), jnp.sin(angles / 2)]))
    vecs = [trig[:, :, i] for i in range(angles.shape[1])]
    hi = _kron_tree(vecs[:half]) if half else jnp.ones((1, angles.shape[0]), angles.dtype)
    return hi, _kron_tree(vecs[half:])


def _unfused(x: jax.Array) -> jax.Array:
    """x (r, c) times the identity: a value XLA computes once instead of fusing into consumers."""
    return jnp.dot(x, jnp.eye(x.shape[-1], dtype=x.dtype), precision=HIGHEST)


def _outer(hi: jax.Array, lo: jax.Array) -> jax.Array:
    if hi.shape[-1] == 1:
        # One sample: a matrix product with a zero column padded in. XLA fuses a plain outer
        # product with the two Kronecker trees and recomputes them per amplitude (10x slower,
        # measured); a K = 2 product is neither simplified away nor fused.
        hi2 = jnp.concatenate([hi, jnp.zeros_like(hi)], axis=1)
        lo2 = jnp.concatenate([lo, jnp.zeros_like(lo)], axis=1)
        return jnp.dot(hi2, lo2.T, precision=HIGHEST).reshape(-1, 1)
    # Through a product XLA cannot fuse, each half is built once rather than once per amplitude.
    hi, lo = _unfused(hi), _unfused(lo)
    return (hi[:, None, :] * lo[None, :, :]).reshape(-1, hi.shape[-1])


@jax.custom_vjp
def product_state(angles: jax.Array) -> jax.Array:
    """prod_i RY(angles[:, i])|0> as (2**n, c) from angles (c, n); qubit 0 most significant.

    Built as the outer product of the two halves' states. Its VJP contracts the cotangent with
    each half (two matrix-vector passes) instead of differentiating the whole tree.
    """
    return _outer(*_halves(angles))


def _product_state_fwd(angles):
    return product_state(angles), angles


def _product_state_bwd(angles, lam):
    (hi, lo), halves_vjp = jax.vjp(_halves, angles)
    lam = lam.reshape(hi.shape[0], lo.shape[0], -1)
    if lam.shape[-1] == 1:
        d_hi = jnp.dot(lam[:, :, 0], lo[:, 0], precision=HIGHEST)[:, None]
        d_lo = jnp.dot(hi[:, 0], lam[:, :, 0], precision=HIGHEST)[:, None]
    else:
        d_hi = jnp.sum(lam * lo[None, :, :], axis=1)
        d_lo = jnp.sum(lam * hi[:, None, :], axis=0)
    return halves_vjp((d_hi, d_lo))


product_state.defvjp(_product_state_fwd, _product_state_bwd)


def _group_matrices(theta: jax.Array, groups: tuple[int, ...]) -> list[jax.Array]:
    mats, start = [], 0
    for size in groups:
        mats.append(_kron_all([_ry(theta[start + j]) for j in range(size)]))
        start += size
    return mats


def _apply_group(x: jax.Array, mat: jax.Array, before: int, size: int) -> jax.Array:
    """mat applied to qubits [before, before + size) of x (2**n, c), layout unchanged.

    The state is viewed as (a, K, b) with K = 2**size; the form of the product is chosen so
    that XLA runs a plain (batched) matrix product without transposing the state.
    """
    a, k = 2**before, 2**size
    b = x.size // (a * k)
    if b == 1:
        return jnp.dot(x.reshape(a, k), mat.T, precision=HIGHEST).reshape(x.shape)
    if a == 1:
        return jnp.dot(mat, x.reshape(k, b), precision=HIGHEST).reshape(x.shape)
    y = jax.lax.dot_general(
        jnp.broadcast_to(mat, (a, k, k)), x.reshape(a, k, b), (((2,), (1,)), ((0,), (0,))),
        precision=HIGHEST,
    )  # fmt: skip
    return y.reshape(x.shape)


def _group_correlation(lam: jax.Array, psi: jax.Array, before: int, size: int) -> jax.Array:
    """C[r, r'] = sum over every other axis of lam[.., r, ..] psi[.., r', ..] (K x K)."""
    a, k = 2**before, 2**size
    b = psi.size // (a * k)
    if b == 1:
        return jnp.dot(lam.reshape(a, k).T, psi.reshape(a, k), precision=HIGHEST)
    if a == 1:
        return jnp.dot(lam.reshape(k, b), psi.reshape(k, b).T, precision=HIGHEST)
    per_a = jax.lax.dot_general(
        lam.reshape(a, k, b), psi.reshape(a, k, b), (((2,), (2,)), ((0,), (0,))),
        precision=HIGHEST,
    )  # fmt: skip
    return per_a.sum(axis=0)


def _offsets(groups: tuple[int, ...]) -> list[int]:
    return [sum(groups[:i]) for i in range(len(groups))]


def _cycle_group(x: jax.Array, mat: jax.Array) -> jax.Array:
    """mat applied to the last qubits of a one-sample state, which then become its first qubits.

    One plain matrix product mat (K, K) times x (rest, K)^T, which XLA runs on every core.
    """
    k = mat.shape[0]
    return jnp.dot(mat, x.reshape(-1, k).T, precision=HIGHEST).reshape(x.shape)


def _cycles(psi: jax.Array) -> bool:
    """Whether a state is one sample, whose groups are applied by cycling (QCXR_SV_CYCLE=0: not)."""
    return psi.shape[-1] == 1 and os.environ.get("QCXR_SV_CYCLE", "1") == "1"


def rotate(psi: jax.Array, mats: list[jax.Array], groups: tuple[int, ...]) -> jax.Array:
    """RY on every qubit of psi (2**n, c): one product per group with its matrix (2^k x 2^k)."""
    if _cycles(psi):
        # One sample: each group, from the last up, is rotated and moved to the front; once
        # the top group has been applied the qubits are back in their order (measured 25% faster a layer
        # than the batched products _apply_group needs for the middle groups).
        for mat in reversed(mats):
            psi = _cycle_group(psi, mat)
        return psi
    for mat, before, size in zip(mats, _offsets(groups), groups, strict=True):
        psi = _apply_group(psi, mat, before, size)
    return psi


def _pair_signs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """S[j, r] = +1/2 if bit j of r is set else -1/2, and the partner index r ^ bit j."""
    r = np.arange(2**size)
    bits = np.array([(r >> (size - 1 - j)) & 1 for j in range(size)])
    partners = np.array([r ^ (1 << (size - 1 - j)) for j in range(size)])
    return np.where(bits == 1, 0.5, -0.5).astype(np.float32), partners


def _pair_grads(corr: jax.Array, size: int) -> jax.Array:
    """d loss / d theta for each qubit of a group from its correlation C = lam psi^T."""
    signs, partners = _pair_signs(size)
    return jnp.sum(signs * corr[np.arange(2**size)[None, :], partners], axis=1)


def rotate_back_with_grads(
    psi: jax.Array, lam: jax.Array, mats: list[jax.Array], groups: tuple[int, ...], need_psi: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Undo a rotation layer on state and adjoint (both (2**n, c)); also d loss / d theta.

    d/d theta_i RY(theta_i) = RY(theta_i) G_i with G_i = [[0, -1], [1, 0]] / 2 on qubit i. G_i
    commutes with every rotation of the layer, so grad_i = lam . (G_i psi) anywhere in the
    layer: for a group, C = lam psi^T over all other axes (one matrix product) gives them all.
    """
    if _cycles(psi) and need_psi:
        # Both are undone anyway: cycle each group to the front, where its correlation is a
        # plain product over contiguous rows (cheaper than the strided forms below).
        grads = []
        for mat, size in zip(reversed(mats), reversed(groups), strict=True):
            lam, psi = _cycle_group(lam, mat.T), _cycle_group(psi, mat.T)
            grads.append(_pair_grads(_group_correlation(lam, psi, 0, size), size))
        return psi, lam, jnp.concatenate(grads[::-1])
    grads = [
        _pair_grads(_group_correlation(lam, psi, before, size), size)
        for before, size in zip(_offsets(groups), groups, strict=True)
    ]
    for mat, before, size in zip(mats, _offsets(groups), groups, strict=True):
        lam = _apply_group(lam, mat.T, before, size)
        if need_psi:
            psi = _apply_group(psi, mat.T, before, size)
    return psi, lam, jnp.concatenate(grads)


def _parity_signs(masks: tuple[int, ...], bits: int, shift: int) -> np.ndarray:
    """(2**bits, len(masks)) table of (-1)^parity(index & mask), index on bits [shift, shift+bits)."""
    index = np.arange(2**bits, dtype=np.int64) << shift
    table = [1 - 2 * (np.bitwise_count(index & m).astype(np.int64) & 1) for m in masks]
    return np.stack(table, axis=1).astype(np.float32)


def parity_expvals(psi: jax.Array, masks: tuple[int, ...]) -> jax.Array:
    """<(-1)^{parity(b & m_k)}> for every mask, psi (2**n, c) -> (c, n): <Z_k> after the entangler.

    The parity sign of b = (hi, lo) factorises, so with the probabilities as a (2^a, 2^b)
    matrix every expectation is u_k^T P v_k: one matrix product with a (2^a x n) sign table
    and a reduction with a (2^b x n) one; no 2^n x n table is formed.
    """
    n = len(masks)
    hi_bits = n // 2
    lo_bits = n - hi_bits
    probs = (psi * psi).reshape(2**hi_bits, -1)  # (2^a, 2^b * c)
    hi = jnp.asarray(_parity_signs(masks, hi_bits, lo_bits))  # (2^a, n)
    lo = jnp.asarray(_parity_signs(masks, lo_bits, 0))  # (2^b, n)
    w = jnp.dot(hi.T, probs, precision=HIGHEST).reshape(n, 2**lo_bits, -1)  # (n, 2^b, c)
    return jnp.einsum("kbc,bk->ck", w, lo, precision=HIGHEST)


def permuted_index(n: int, rows: tuple[int, ...]) -> jax.Array:
    """Index b -> M b for the GF(2) matrix with these rows, computed on the fly (no constant)."""
    index = jax.lax.iota(jnp.int32, 2**n)
    out = jnp.zeros_like(index)
    for k, mask in enumerate(rows):
        out = out | ((jax.lax.population_count(index & mask) & 1) << (n - 1 - k))
    return out


class Circuit:
    """Static description of one circuit shape: n qubits, L layers, entangler, fusion groups."""

    def __init__(self, n: int, layers: int, entangler: str, group_size: int | None, chunk: int):
        self.n, self.layers, self.entangler, self.chunk = n, layers, entangler, chunk
        self.groups = qubit_groups(n, group_size or default_group_size(n), chunk == 1)
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
        return [_group_matrices(theta, self.groups) for theta in thetas]

    def evolve(self, angles: jax.Array, mats: list[list[jax.Array]], indices) -> jax.Array:
        """States (2**n, c) before the last entangler; angles (c, n); mats: see matrices."""
        psi = product_state(angles)
        for layer_mats in mats:
            psi = rotate(self.entangle(psi, indices), layer_mats, self.groups)
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
                psi, lam, mats[layer], self.groups, need_psi=layer > 0
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
    override = os.environ.get("QCXR_SV_GROUP")
    return min(n, int(override)) if override else min(n, 4)


def default_chunk(n: int, batch: int) -> int:
    """Samples per map step (a divisor of the batch): the chunk's states stay within cache.

    From n = 16 on, one sample per step: its groups run as plain products that cycle the
    qubits, while a chunk of 2-8 samples last makes every group a batched product over rows
    of 2-8 floats (measured per step, batch 32: n = 16 1.2x, n = 17 2.1x, n = 18 22x slower).
    """
    override = os.environ.get("QCXR_SV_CHUNK")
    if override is None and n >= 16:
        return 1
    target = int(override) if override else 2 ** (19 - n)
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
    n: int, layers: int, entangler: str, group_size: int | None = None, chunk: int = 1
) -> Circuit:
    key = (n, layers, entangler, group_size or default_group_size(n), chunk)
    if key not in _CIRCUITS:
        _CIRCUITS[key] = Circuit(n, layers, entangler, group_size, chunk)
    return _CIRCUITS[key]


def expvals(
    x: jax.Array, weights: jax.Array, entangler: str = "ring", group_size: int | None = None
) -> jax.Array:
    """<Z_i> of the dressed circuit for a batch: x (B, n) angles, weights (L, n) -> (B, n)."""
    x = jnp.asarray(x, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    n, layers = x.shape[-1], weights.shape[0]
    circuit = circuit_for(n, layers, entangler, group_size, default_chunk(n, x.shape[0]))
    angles = x + weights[0] + jnp.pi / 2  # H|0> = RY(pi/2)|0>; layer-0 RY adds to the embedding
    return _expvals(angles, weights[1:], circuit)
