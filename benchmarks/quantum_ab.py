"""Compare simulator settings on the DQC head step, interleaved in one process.

The machine is shared and its speed drifts by 10-30% over minutes, so settings are compared
round by round in one process: every round times each setting once, and the minimum and
median over rounds are reported. A setting is a comma-separated list of the statevector
simulator's tuning arguments (`qcxr.quantum.statevector.expvals`): group_size=K, chunk=C,
cycle=0|1; "" is the defaults.

    python benchmarks/quantum_ab.py --qubits 18 --rounds 3 "" "chunk=2"
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.bench.quantum import training_step
from qcxr.models.heads import uniform_angles
from qcxr.quantum import statevector

KNOBS = {"group_size": int, "chunk": int, "cycle": lambda v: bool(int(v))}


def parse_setting(setting: str) -> dict:
    """ "group_size=3,chunk=2" -> {"group_size": 3, "chunk": 2}; "" -> {} (the defaults)."""
    knobs = {}
    for pair in filter(None, setting.split(",")):
        name, _, value = pair.partition("=")
        if name not in KNOBS:
            raise SystemExit(f"unknown simulator setting {name!r}; known: {', '.join(KNOBS)}")
        knobs[name] = KNOBS[name](value)
    return knobs


class TunedHead(nn.Module):
    """qcxr.models.heads.DressedQuantumHead on the statevector simulator with its knobs set:
    Dense(n) -> tanh * pi/2 -> circuit <Z_i> -> Dense(n)."""

    num_labels: int
    num_layers: int
    entangler: str
    knobs: tuple[tuple[str, object], ...] = ()

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        n = self.num_labels
        angles = jnp.tanh(nn.Dense(n, name="preprocess")(features)) * (jnp.pi / 2)
        weights = self.param("circuit", uniform_angles, (self.num_layers, n))
        expvals = statevector.expvals(angles, weights, self.entangler, **dict(self.knobs))
        return nn.Dense(n, name="postprocess")(expvals)


def head_step(n: int, knobs: dict, batch: int = 32, layers: int = 3, entangler: str = "ring"):
    """(jitted step, initial state, batch): qcxr.bench.quantum's training step (BCE, gradients,
    Adam) for the DQC head, with the simulator's knobs."""
    model = TunedHead(n, layers, entangler, tuple(sorted(knobs.items())))
    return training_step(model, n, batch)


def compiled_step(n: int, setting: str):
    """The head step with the setting's knobs, compiled and run once."""
    step, (params, opt_state), (x, y) = head_step(n, parse_setting(setting))
    jax.block_until_ready(step(params, opt_state, x, y))
    return lambda: step(params, opt_state, x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=19)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=0, help="steps per round (0: by n)")
    parser.add_argument("settings", nargs="+", help='e.g. "" "chunk=1" "group_size=3,cycle=0"')
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.qubits >= 17 else 20)
    steps = [compiled_step(args.qubits, s) for s in args.settings]
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
