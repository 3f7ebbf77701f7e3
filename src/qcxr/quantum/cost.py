"""Which exact simulator is cheaper for a circuit: the statevector or the matrix product state.

The statevector's training step grows as L 2^n; the MPS's as n chi^3 with chi = D^(L-1) (D = 4
for the ring, 2 for the chain, 1 for none), whatever n. So for each entangler and depth there is
one n from which the MPS wins. `CROSSOVER` holds that n as measured by benchmarks/crossover.py
(value and gradients, batch 32, side by side in one process; benchmarks/crossover.md). Where
both steps take under a millisecond the measurement is noise, so small-n entries are set to 8,
and ties are resolved so the table grows with L.
"""

from __future__ import annotations

# (entangler, L) -> first n at which "auto" picks "mps" (2-core CPU, 2026-11-30).
CROSSOVER: dict[tuple[str, int], int] = {
    ("ring", 1): 8,  # chi = 1: a product state
    ("ring", 2): 12,  # chi = 4
    ("ring", 3): 14,  # chi = 16: the paper's circuit (sv 33 ms vs mps 8.5 ms at n = 14)
    ("ring", 4): 18,  # chi = 64
    ("ring", 5): 22,  # chi = 256
    ("chain", 1): 8,
    ("chain", 2): 8,
    ("chain", 3): 10,
    ("chain", 4): 10,
    ("chain", 5): 12,
    ("none", 1): 8,
    ("none", 2): 8,
    ("none", 3): 8,
    ("none", 4): 8,
    ("none", 5): 8,
}
# Per extra layer past the table, the crossover moves by log2 of the MPS's extra cost per
# layer measured from L = 4 to 5 (ring: 4 qubits; chain: 2); none stays product-like.
PER_EXTRA_LAYER = {"ring": 4, "chain": 2, "none": 0}


def crossover(num_layers: int, entangler: str) -> int:
    """The first n at which the MPS backend is the cheaper one."""
    table_depth = max(layers for ent, layers in CROSSOVER if ent == entangler)
    depth = min(num_layers, table_depth)
    extra = max(0, num_layers - table_depth) * PER_EXTRA_LAYER[entangler]
    return CROSSOVER[(entangler, depth)] + extra


def choose_backend(n: int, num_layers: int, entangler: str) -> str:
    """ "statevector" below the measured crossover, "mps" from it on (`CROSSOVER`)."""
    return "mps" if n >= crossover(num_layers, entangler) else "statevector"


def resolve_backend(backend: str, n: int, num_layers: int, entangler: str) -> str:
    """The simulator a DQC head of n qubits runs on: `backend`, or for "auto" the cheaper of
    statevector and mps (`choose_backend`)."""
    return choose_backend(n, num_layers, entangler) if backend == "auto" else backend
