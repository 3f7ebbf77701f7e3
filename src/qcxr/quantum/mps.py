"""Exact matrix-product-state simulation of the dressed circuit, for any number of qubits.

Everything before the first entangler is a product state (statevector.py says why). Each later
entangler is an exact MPO of bond dimension D (`mpo.entangler_mpo`: 4 for the ring, 2 for the
chain), and single-qubit rotations keep the bond, so the state before the last entangler is an
MPS of bond dimension chi = D^(L-1) with no truncation: 16 for the paper's three ring layers,
whatever n. This is also its Schmidt rank in general, so nothing smaller is exact. The last
entangler is folded into the measurement: Z_k after it is the Z-string over the set bits of the
parity mask m_k (`ansatz.parity_masks`), and for the ring, the chain and "none" every string is
a prefix Z_0..Z_b, a suffix Z_a..Z_(n-1) or a single Z_k. Their expectations share environments:
one scan over the sites carries the left environments (with Z on every site, or none) and the
right ones together, so all n values cost O(n chi^3) per sample and no string is contracted
twice. No SVD anywhere: gradients are JAX's own, through exact contractions.

Tensors are real (H, RY and CNOT are real); their dtype is the input's: float32 by default,
float64 under x64.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.ansatz import parity_masks
from qcxr.quantum.mpo import entangler_mpo

HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes for the contractions
Z_SIGNS = np.array([1.0, -1.0])


class Strings(NamedTuple):
    """Which Z-string each <Z_k> is, as static index arrays: (k, last site) for prefixes
    Z_0..Z_last, (k, first site) for suffixes, (k, site) for single sites."""

    prefix: tuple[tuple[int, int], ...]
    suffix: tuple[tuple[int, int], ...]
    single: tuple[tuple[int, int], ...]


@lru_cache(maxsize=64)
def measured_strings(n: int, entangler: str) -> Strings:
    """Classify the folded observables; any other shape of string is not supported."""
    prefix, suffix, single = [], [], []
    for k, mask in enumerate(parity_masks(n, entangler)):
        sites = [j for j in range(n) if mask >> (n - 1 - j) & 1]
        first, last = sites[0], sites[-1]
        if sites != list(range(first, last + 1)):
            raise ValueError(f"{entangler}: Z_{k} folds into a non-contiguous Z-string {sites}")
        if first == 0:
            prefix.append((k, last))
        elif last == n - 1:
            suffix.append((k, first))
        elif first == last:
            single.append((k, first))
        else:
            raise ValueError(f"{entangler}: Z_{k} folds into the inner Z-string {sites}")
    return Strings(tuple(prefix), tuple(suffix), tuple(single))


def _ry(theta: jax.Array) -> jax.Array:
    """RY matrices (..., 2, 2) as [out, in]."""
    c, s = jnp.cos(theta / 2), jnp.sin(theta / 2)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def mps_tensors(angles: jax.Array, thetas: jax.Array, entangler: str) -> jax.Array:
    """The state before the last entangler as MPS tensors (B, n, chi, 2, chi); boundary bonds
    are index 0. angles: (B, n) embedding angles; thetas: (L, n) circuit weights."""
    batch, n = angles.shape
    first = jnp.pi / 2 + angles + thetas[0]  # H|0> = RY(pi/2)|0>: one rotation per qubit
    a = jnp.stack([jnp.cos(first / 2), jnp.sin(first / 2)], -1)[:, :, None, :, None]
    if thetas.shape[0] > 1:
        mpo = jnp.asarray(entangler_mpo(n, entangler), angles.dtype)
    for theta in thetas[1:]:
        # Entangler then the layer's rotations, both per site: one (D, 2, 2, D) tensor a site.
        site_ops = jnp.einsum("jpq,jdqre->jdpre", _ry(theta), mpo, precision=HIGHEST)
        a = jnp.einsum("jdpqe,bjaqc->bjadpce", site_ops, a, precision=HIGHEST)
        chi = a.shape[2] * a.shape[3]
        a = a.reshape(batch, n, chi, 2, chi)
    return a


def _boundary(batch: int, chi: int, dtype) -> jax.Array:
    return jnp.zeros((batch, chi, chi), dtype).at[:, 0, 0].set(1)


def _transfer(env: jax.Array, site: jax.Array, z: bool = False) -> jax.Array:
    """sum_p s_p A_p^T env A_p over any leading axes, s the signs of Z where z is set."""
    return _close_left(site, _left_product(env, site) * _signs(z, site.dtype))


def _signs(z: bool, dtype) -> np.ndarray:
    """Factors s_p of sum_p s_p A_p^T E A_p, shaped for (B, chi, 2, chi) arrays."""
    return (Z_SIGNS if z else np.ones(2)).astype(dtype)[:, None]


# Every contraction below is a batched matrix product whose operands are (B, rows, cols) views
# with no transposition: XLA then runs it without copying (keeping a kind axis beside the
# batch axis made it transpose every step, and the backward ran 6x slower than the forward).
# Environments are symmetric, so E and E^T are used interchangeably.


def _left_product(env: jax.Array, site: jax.Array) -> jax.Array:
    """env A_p as [..., x, p, z]: env (..., chi, chi), site A (..., chi, 2, chi)."""
    return jnp.einsum("...xy,...ypz->...xpz", env, site, precision=HIGHEST)


def _close_left(site: jax.Array, product: jax.Array) -> jax.Array:
    """sum_p A_p^T product_p: the left transfer from `_left_product` (times signs)."""
    return jnp.einsum("...xpz,...xpw->...zw", site, product, precision=HIGHEST)


def _right_product(env: jax.Array, site: jax.Array) -> jax.Array:
    """A_p env as [b, x, p, w]."""
    return jnp.einsum("bxpz,bzw->bxpw", site, env, precision=HIGHEST)


def _close_right(site: jax.Array, product: jax.Array) -> jax.Array:
    """sum_p product_p A_p^T: the right transfer from `_right_product` (times signs)."""
    return jnp.einsum("bxpw,bypw->bxy", product, site, precision=HIGHEST)


def _symmetric(m: jax.Array) -> jax.Array:
    return (m + jnp.swapaxes(m, -1, -2)) / 2


Kinds = tuple[tuple[str, bool], ...]


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sweep(sites: jax.Array, kinds: Kinds) -> tuple[jax.Array, ...]:
    """Environments of each kind after each step of one scan, (n, B, chi, chi) a kind. A kind
    ("L", z) takes site t at step t, ("R", z) site n-1-t; z puts Z on every site it passed.
    sites: (n, B, chi, 2, chi)."""
    return _sweep_fwd(sites, kinds)[0]


def _sweep_fwd(sites, kinds):
    n, batch, chi = sites.shape[:3]
    signs = [_signs(z, sites.dtype) for _, z in kinds]

    def step(envs, t):
        a_l, a_r = sites[t], sites[n - 1 - t]
        # The products s_p E A_p (or s_p A_p E) are kept: the backward's gradients start there.
        products = tuple(
            (_left_product(e, a_l) if side == "L" else _right_product(e, a_r)) * s
            for e, (side, _), s in zip(envs, kinds, signs, strict=True)
        )
        envs = tuple(
            _close_left(a_l, p) if side == "L" else _close_right(p, a_r)
            for p, (side, _) in zip(products, kinds, strict=True)
        )
        return envs, (envs, products)

    start = tuple(_boundary(batch, chi, sites.dtype) for _ in kinds)
    _, (envs, products) = jax.lax.scan(step, start, jnp.arange(n))
    return envs, (sites, products)


def _sweep_bwd(kinds, residuals, cotangents):
    """The adjoint recursion in a reverse scan; each step also gives its sites' gradients:
    d<lam, sum_p s_p A_p^T E A_p>/dA_p = 2 s_p E A_p lam for symmetric E and lam, and the
    mirror image 2 s_p lam A_p E from the right. Only the symmetric part of a cotangent
    matters, since every environment is symmetric; the adjoint recursion keeps it symmetric."""
    sites, products = residuals
    n = sites.shape[0]
    signs = [_signs(z, sites.dtype) for _, z in kinds]
    cotangents = tuple(_symmetric(c) for c in cotangents)

    def step(lams, args):
        t, cots, prods = args
        a_l, a_r = sites[t], sites[n - 1 - t]
        lams = tuple(lam + c for lam, c in zip(lams, cots, strict=True))
        d_l, d_r = jnp.zeros_like(a_l), jnp.zeros_like(a_r)
        back = []
        for lam, p, (side, _), s in zip(lams, prods, kinds, signs, strict=True):
            if side == "L":
                d_l = d_l + jnp.einsum("bxpz,bzw->bxpw", p, lam, precision=HIGHEST)
                back.append(_close_right(_right_product(lam, a_l) * s, a_l))
            else:
                d_r = d_r + jnp.einsum("bxy,bypw->bxpw", lam, p, precision=HIGHEST)
                back.append(_close_left(a_r, _left_product(lam, a_r) * s))
        return tuple(back), (2 * d_l, 2 * d_r)

    zeros = tuple(jnp.zeros_like(c[0]) for c in cotangents)
    args = (jnp.arange(n), cotangents, products)
    _, (d_left, d_right) = jax.lax.scan(step, zeros, args, reverse=True)
    return (d_left + jnp.flip(d_right, 0),)


_sweep.defvjp(_sweep_fwd, _sweep_bwd)


def _inner(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.sum(u * v, axis=(-2, -1))


def expvals(x: jax.Array, weights: jax.Array, entangler: str) -> jax.Array:
    """<Z_k> for every qubit, (B, n), exact for any n (see the module docstring)."""
    dtype = jnp.result_type(x.dtype, jnp.float32)
    return expvals_from_tensors(
        mps_tensors(x.astype(dtype), weights.astype(dtype), entangler), entangler
    )


def expvals_from_tensors(a: jax.Array, entangler: str) -> jax.Array:
    """<Z_k> (B, n) of the MPS `a` (B, n, chi, 2, chi) after the folded last entangler."""
    batch, n, chi = a.shape[:3]
    dtype = a.dtype
    strings = measured_strings(n, entangler)
    kinds = tuple(
        kind
        for kind, used in (
            (("L", True), strings.prefix),
            (("L", False), strings.single),
            (("R", False), strings.prefix or strings.single),
            (("R", True), strings.suffix),
        )
        if used
    )
    envs = dict(zip(kinds, _sweep(jnp.moveaxis(a, 1, 0), kinds), strict=True))
    edge = _boundary(batch, chi, dtype)[None]
    # left[i]: sites 0..i-1 contracted; right[j]: sites j..n-1 contracted (i, j = 0..n).
    left = {z: jnp.concatenate([edge, envs[("L", z)]]) for z in (True, False) if ("L", z) in envs}
    right = {
        z: jnp.concatenate([jnp.flip(envs[("R", z)], 0), edge])
        for z in (True, False)
        if ("R", z) in envs
    }
    out = jnp.zeros((n, batch), dtype)
    if strings.prefix:
        k, last = map(np.array, zip(*strings.prefix, strict=True))
        out = out.at[k].set(_inner(left[True][last + 1], right[False][last + 1]))
    if strings.suffix:
        k, first = map(np.array, zip(*strings.suffix, strict=True))
        out = out.at[k].set(_inner(_left_plain(a, first), right[True][first]))
    if strings.single:
        k, site = map(np.array, zip(*strings.single, strict=True))
        middle = _transfer(left[False][site], jnp.moveaxis(a, 1, 0)[site], z=True)
        out = out.at[k].set(_inner(middle, right[False][site + 1]))
    return out.T


def _left_plain(a: jax.Array, firsts: np.ndarray) -> jax.Array:
    """Left environments without Z over sites 0..f-1 for each f in `firsts` (small f only: the
    ring's one suffix starts at site 1), (len(firsts), B, chi, chi)."""
    out = []
    for f in firsts:
        env = _boundary(a.shape[0], a.shape[2], a.dtype)
        for j in range(int(f)):
            env = _transfer(env, a[:, j])
        out.append(env)
    return jnp.stack(out)
