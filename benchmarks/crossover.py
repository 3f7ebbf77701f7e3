"""Where the MPS backend overtakes the statevector backend: the data behind `choose_backend`.

For every entangler and L = 1..5 this times value and gradients of the circuit (batch 32, jit,
median of repeats) on both backends, n = 4, 6, 8, ... until the MPS step is the faster one, and
prints the first such n. Both backends run in this one process, side by side at each n, so
machine load affects both alike. Results: benchmarks/crossover.md.

    .venv/bin/python benchmarks/crossover.py [--max-qubits 22] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum import dqc_expvals


def step_seconds(n: int, layers: int, entangler: str, backend: str, repeats: int) -> float:
    rng = np.random.default_rng(n)
    x = jnp.asarray(rng.uniform(-1.5, 1.5, (32, n)), jnp.float32)
    w = jnp.asarray(rng.uniform(0, 2 * np.pi, (layers, n)), jnp.float32)

    @jax.jit
    def step(x, w):
        return jax.value_and_grad(
            lambda x, w: jnp.sum(dqc_expvals(x, w, entangler=entangler, backend=backend) ** 2),
            (0, 1),
        )(x, w)

    jax.block_until_ready(step(x, w))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(x, w))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# Deep rings have a bond of 4^(L-1) (64, 256) and lose at every small n: start nearer the
# crossover instead of spending minutes on the hopeless points.
FIRST_N = {("ring", 3): 8, ("ring", 4): 14, ("ring", 5): 18, ("chain", 5): 8}


def crossover(layers: int, entangler: str, max_qubits: int, repeats: int) -> dict:
    """The first even n at which mps is faster, with both timings along the way."""
    trail = []
    for n in range(FIRST_N.get((entangler, layers), 4), max_qubits + 1, 2):
        sv = step_seconds(n, layers, entangler, "statevector", repeats)
        mps = step_seconds(n, layers, entangler, "mps", repeats)
        trail.append({"n": n, "statevector_s": sv, "mps_s": mps})
        print(f"L={layers} {entangler:5s} n={n:2d}: statevector {sv * 1e3:8.2f} ms, "
              f"mps {mps * 1e3:8.2f} ms", flush=True)  # fmt: skip
        if mps < sv:
            return {"layers": layers, "entangler": entangler, "crossover": n, "trail": trail}
    return {"layers": layers, "entangler": entangler, "crossover": None, "trail": trail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-qubits", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--entanglers", nargs="+", default=["ring", "chain", "none"])
    parser.add_argument("--out", default="benchmarks/results/crossover.json")
    args = parser.parse_args()
    results = [
        crossover(layers, entangler, args.max_qubits, args.repeats)
        for entangler in args.entanglers
        for layers in args.layers
    ]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} device",
        "jax": jax.__version__,
    }
    with open(args.out, "w") as handle:
        json.dump({"meta": meta, "results": results}, handle, indent=1)
    for r in results:
        print(f"L={r['layers']} {r['entangler']:5s}: mps faster from n = {r['crossover']}")


if __name__ == "__main__":
    main()
