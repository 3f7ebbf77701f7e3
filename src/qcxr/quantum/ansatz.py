"""The dressed-circuit ansatz as data: which CNOTs an entangler applies, and what they do to
basis-state indices. Shared by every backend so they cannot disagree about the circuit.

Qubit 0 is the most significant bit of a basis index (PennyLane's wire order).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from qcxr.config import ENTANGLERS  # the choices of model.entangler, defined once


def entangler_cnots(n: int, entangler: str) -> list[tuple[int, int]]:
    """(control, target) pairs in application order (the circuit of docs/ARCHITECTURE.md)."""
    if entangler not in ENTANGLERS:
        raise ValueError(f"unknown entangler {entangler!r}; choose one of {ENTANGLERS}")
    if entangler == "none" or n < 2:
        return []
    if entangler == "chain" or n == 2:
        return [(i, i + 1) for i in range(n - 1)]
    return [(i, (i + 1) % n) for i in range(n)]


def _bit(n: int, qubit: int) -> int:
    return 1 << (n - 1 - qubit)


def _gf2_rows(n: int, cnots: list[tuple[int, int]]) -> tuple[int, ...]:
    rows = [_bit(n, k) for k in range(n)]  # rows of the GF(2) matrix, as bitmasks over b
    for control, target in cnots:
        rows[target] ^= rows[control]
    return tuple(rows)


@lru_cache(maxsize=64)
def parity_masks(n: int, entangler: str) -> tuple[int, ...]:
    """Masks m_k with bit k of P(b) equal to the parity of (b & m_k): Z_k after the entangler."""
    return _gf2_rows(n, entangler_cnots(n, entangler))


@lru_cache(maxsize=64)
def inverse_parity_masks(n: int, entangler: str) -> tuple[int, ...]:
    """The same for the inverse permutation (every CNOT is its own inverse: reverse the order)."""
    return _gf2_rows(n, entangler_cnots(n, entangler)[::-1])


@lru_cache(maxsize=16)
def basis_permutation(n: int, entangler: str) -> tuple[np.ndarray, np.ndarray]:
    """(forward, inverse) index arrays: after the entangler, psi_new = psi[inverse]; psi = psi_new[forward]."""
    index = np.arange(2**n, dtype=np.int64)
    image = np.zeros_like(index)
    for k, mask in enumerate(parity_masks(n, entangler)):
        bit = np.bitwise_count(index & mask).astype(np.int64) & 1  # uint8 would overflow
        image |= bit << (n - 1 - k)
    inverse = np.empty_like(image)
    inverse[image] = index
    return image.astype(np.int32), inverse.astype(np.int32)


def qubit_groups(n: int, group_size: int, single_sample: bool = False) -> tuple[int, ...]:
    """Sizes of the consecutive qubit groups whose rotations are fused into one matrix.

    With one sample per chunk the least significant qubits are the state's contiguous axis: a
    last group of up to 6 of them is one plain matrix product, while a small group just above
    them runs slowly as a batched product over short rows. So the last 6 qubits form one group
    and the rest is split from the top (measured in benchmarks/quantum.md).
    """
    tail = min(6, n) if single_sample and n > 12 else 0
    head = n - tail
    sizes = [group_size] * (head // group_size)
    if head % group_size:
        if single_sample and sizes and head % group_size <= group_size // 2:
            sizes[-1] += head % group_size  # merge a short remainder into the group above it
        else:
            sizes.append(head % group_size)
    return tuple(sizes + ([tail] if tail else []))
