"""Compare simulator settings on the DQC head step, interleaved in one process.

The machine is shared and its speed drifts by 10-30% over minutes, so settings are compared
round by round in one process: every round times each setting once, and the minimum and
median over rounds are reported. A setting is a comma-separated list of environment variables
the simulator reads when a step is traced (QCXR_SV_CHUNK, QCXR_SV_GROUP, QCXR_SV_CYCLE).

    python benchmarks/quantum_ab.py --qubits 18 --rounds 3 "" "QCXR_SV_CHUNK=2"
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

from qcxr.bench.quantum import head_step
from qcxr.quantum import statevector


def traced_step(n: int, setting: str):
    """The head step with the setting's variables set while it is traced and compiled."""
    pairs = [kv.split("=", 1) for kv in setting.split(",") if kv]
    saved = {k: os.environ.get(k) for k, _ in pairs}
    os.environ.update(dict(pairs))
    statevector._CIRCUITS.clear()
    try:
        step, (params, opt_state), (x, y) = head_step(n, "statevector", 32, 3, "ring")
        jax.block_until_ready(step(params, opt_state, x, y))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
        statevector._CIRCUITS.clear()
    return lambda: step(params, opt_state, x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=19)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=0, help="steps per round (0: by n)")
    parser.add_argument("settings", nargs="+", help='e.g. "" "QCXR_SV_CHUNK=1"')
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.qubits >= 17 else 20)
    steps = [traced_step(args.qubits, s) for s in args.settings]
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(args.rounds):
        for run, out in zip(steps, times, strict=True):
            jax.block_until_ready(run())
            start = time.perf_counter()
            for _ in range(repeats):
                result = run()
            jax.block_until_ready(result)
            out.append((time.perf_counter() - start) / repeats)
    for setting, ts in zip(args.settings, times, strict=True):
        print(
            f"n={args.qubits} {setting or 'default':36s} min {min(ts) * 1e3:9.3f} ms  "
            f"median {statistics.median(ts) * 1e3:9.3f} ms"
        )


if __name__ == "__main__":
    main()
