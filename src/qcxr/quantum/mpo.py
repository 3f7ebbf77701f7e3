"""An entangler as an exact matrix product operator, built from its GF(2) matrix.

Every entangler here is a chain of CNOTs, so it permutes basis states linearly over GF(2):
b' = G b, with row k of G the parity mask of Z_k (`ansatz.parity_masks`). Across the cut after
site c, the operator only has to carry (a) what the left inputs contribute to the right outputs,
F_c b_left, and (b) what the right inputs contribute to the left outputs, B_c b_right. The bond
holds a basis of each: f = (rows of a basis of F_c's row space) . b_left, computed left to right,
and g, the same for B_c, guessed on the left and confirmed bit by bit to the right. The bond
dimension is 2^(rank F_c + rank B_c): 4 for the ring (a running parity and the wrap-around
bit), 2 for the chain, 1 for "none". Every input b has exactly one path of nonzero weight, so
the operator is exact.

Bits here are Python ints with qubit j as bit j (not the MSB order of basis indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from qcxr.quantum.ansatz import parity_masks


def _parity(v: int) -> int:
    return v.bit_count() & 1


@dataclass(frozen=True)
class Span:
    """A GF(2) row space: an echelon basis, and coordinates of vectors in that basis."""

    basis: tuple[int, ...]  # echelon form: basis[i] has pivot bit pivots[i], absent from later rows
    pivots: tuple[int, ...]

    @staticmethod
    def of(rows: list[int]) -> Span:
        basis: list[int] = []
        pivots: list[int] = []
        for row in rows:
            for b, p in zip(basis, pivots, strict=True):
                if row >> p & 1:
                    row ^= b
            if row:
                pivot = row.bit_length() - 1
                # Keep every earlier basis vector free of the new pivot (reduced echelon form).
                basis = [b ^ row if b >> pivot & 1 else b for b in basis]
                basis.append(row)
                pivots.append(pivot)
        return Span(tuple(basis), tuple(pivots))

    @property
    def rank(self) -> int:
        return len(self.basis)

    def coordinates(self, v: int) -> int:
        """c with v = sum of basis[i] over the set bits i of c; v must lie in the span."""
        c = 0
        for i, (b, p) in enumerate(zip(self.basis, self.pivots, strict=True)):
            if v >> p & 1:
                v ^= b
                c |= 1 << i
        if v:
            raise ValueError("vector outside the span")
        return c


def gf2_rows(n: int, entangler: str) -> list[int]:
    """Row k of G (b'_k = parity(G[k] & b)), with qubit j as bit j."""
    return [
        sum(1 << j for j in range(n) if mask >> (n - 1 - j) & 1)
        for mask in parity_masks(n, entangler)
    ]


def _cut_spans(rows: list[int], n: int) -> list[tuple[Span, Span]]:
    """(F_c, B_c) for the cuts c = -1 .. n-1 (after site c); the two outer cuts are empty."""
    spans = []
    for c in range(-1, n):
        left = (1 << (c + 1)) - 1
        forward = Span.of([rows[k] & left for k in range(c + 1, n)])
        backward = Span.of([rows[k] & ~left for k in range(c + 1)])
        spans.append((forward, backward))
    return spans


def _site_tensor(rows: list[int], j: int, before: tuple[Span, Span], after: tuple[Span, Span]):
    """W[left, out, in, right] of site j, bond index = f + (g << rank F)."""
    (f_in, g_in), (f_out, g_out) = before, after
    below, above = (1 << j) - 1, ~((1 << (j + 1)) - 1)
    # How each bond bit and the output bit follow from (f_in, b_j, g_out).
    f_next = [(f_in.coordinates(v & below), v >> j & 1) for v in f_out.basis]
    g_prev = [(g_out.coordinates(v & above), v >> j & 1) for v in g_in.basis]
    out = (f_in.coordinates(rows[j] & below), rows[j] >> j & 1, g_out.coordinates(rows[j] & above))
    shape = (1 << (f_in.rank + g_in.rank), 2, 2, 1 << (f_out.rank + g_out.rank))
    w = np.zeros(shape, np.int8)
    for f in range(1 << f_in.rank):
        for g in range(1 << g_out.rank):
            for b in range(2):
                fn = sum((_parity(c & f) ^ (bit & b)) << i for i, (c, bit) in enumerate(f_next))
                gp = sum((_parity(c & g) ^ (bit & b)) << i for i, (c, bit) in enumerate(g_prev))
                bo = _parity(out[0] & f) ^ (out[1] & b) ^ _parity(out[2] & g)
                w[f + (gp << f_in.rank), bo, b, fn + (g << f_out.rank)] = 1
    return w


@lru_cache(maxsize=64)
def entangler_mpo(n: int, entangler: str) -> np.ndarray:
    """The entangler's MPO, (n, D, 2, 2, D) as [site, left, out, in, right], zero-padded to the
    largest bond D; both boundary bonds are index 0. Contracting it gives <b'|E|b> = [b' = G b].
    """
    rows = gf2_rows(n, entangler)
    spans = _cut_spans(rows, n)
    sites = [_site_tensor(rows, j, spans[j], spans[j + 1]) for j in range(n)]
    dim = max(max(w.shape[0], w.shape[3]) for w in sites)
    out = np.zeros((n, dim, 2, 2, dim), np.int8)
    for j, w in enumerate(sites):
        out[j, : w.shape[0], :, :, : w.shape[3]] = w
    return out


def bond_dimension(n: int, entangler: str) -> int:
    """D of `entangler_mpo`: 4 for the ring, 2 for the chain, 1 for none (fewer for tiny n)."""
    return entangler_mpo(n, entangler).shape[1]
