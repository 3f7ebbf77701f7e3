"""`qcxr bench quantum` and `qcxr bench table3`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from qcxr.bench import quantum, table3

    bench = sub.add_parser("bench", help="benchmarks (quantum head step; Table III)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    q = bench_sub.add_parser(
        "quantum", help="DQC head training step: qcxr statevector vs PennyLane, side by side"
    )
    quantum.add_arguments(q)
    q.set_defaults(func=quantum.run)
    t = bench_sub.add_parser(
        "table3", help="Table III: CDL and DQC steps in JAX, PyTorch, TensorFlow (PennyLane)"
    )
    table3.add_arguments(t)
    t.set_defaults(func=table3.run)
