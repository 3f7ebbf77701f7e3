"""The kernels of the statevector simulator, on states held as (2**n, c) float32.

Basis index first (qubit 0 most significant), a chunk of c samples last, so every kernel works
on contiguous runs of c floats and chunks stay in cache. A layer of single-qubit rotations is
one small matrix product per group of qubits, in a form XLA runs without transposing the state;
with one sample per chunk each group, from the last up, is rotated by a plain product that also
moves it to the front, so that after the layer the qubits are back in order (`cycle`). The
measurement takes <Z_k> after the last entangler as a parity of Z's. Every gate is orthogonal,
so the adjoint runs the layers backwards (`rotate_back_with_grads`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes for circuit matrix products


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


def group_matrices(theta: jax.Array, groups: tuple[int, ...]) -> list[jax.Array]:
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


def _cycles(psi: jax.Array, cycle: bool) -> bool:
    """Whether a state is one sample whose groups are applied by cycling (unless not `cycle`)."""
    return psi.shape[-1] == 1 and cycle


def rotate(
    psi: jax.Array, mats: list[jax.Array], groups: tuple[int, ...], cycle: bool = True
) -> jax.Array:
    """RY on every qubit of psi (2**n, c): one product per group with its matrix (2^k x 2^k)."""
    if _cycles(psi, cycle):
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
    psi: jax.Array,
    lam: jax.Array,
    mats: list[jax.Array],
    groups: tuple[int, ...],
    need_psi: bool,
    cycle: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Undo a rotation layer on state and adjoint (both (2**n, c)); also d loss / d theta.

    d/d theta_i RY(theta_i) = RY(theta_i) G_i with G_i = [[0, -1], [1, 0]] / 2 on qubit i. G_i
    commutes with every rotation of the layer, so grad_i = lam . (G_i psi) anywhere in the
    layer: for a group, C = lam psi^T over all other axes (one matrix product) gives them all.
    """
    if _cycles(psi, cycle) and need_psi:
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
