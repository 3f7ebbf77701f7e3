"""Where the DQC head step spends its time, kernel by kernel (XLA CPU, from a profiler trace).

Traces two steps with jax.profiler, then joins each kernel's time with its output shape and the
JAX operation it came from in the compiled HLO. Kernels run inside the per-chunk loop appear
once per chunk ("x32" at n = 19). The simulator's tuning arguments can be set (--group-size,
--chunk, --no-cycle; default: its own defaults).

    python benchmarks/quantum_profile.py --qubits 19 --top 30
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax
from quantum_ab import head_step  # benchmarks/quantum_ab.py, beside this script


def kernel_info(hlo: str) -> dict[str, tuple[str, str]]:
    """Kernel name -> (output shape, JAX operation) from compiled HLO text."""
    info = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        if m:
            op = re.search(r'op_name="([^"]*)"', line)
            info[m.group(1)] = (m.group(2), op.group(1) if op else "")
    return info


def kernel_times(trace_dir: Path) -> tuple[collections.Counter, collections.Counter]:
    """Total microseconds and calls per event name in the newest trace under trace_dir."""
    path = sorted(trace_dir.glob("**/*.trace.json.gz"))[-1]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e.get("dur", 0)
            calls[e["name"]] += 1
    return total, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=19)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--group-size", type=int, help="qubits per fused rotation")
    parser.add_argument("--chunk", type=int, help="samples per map step")
    parser.add_argument("--no-cycle", action="store_true", help="rotate one-sample groups in place")
    args = parser.parse_args()
    steps = 2
    knobs = {"group_size": args.group_size, "chunk": args.chunk, "cycle": not args.no_cycle}
    step, (params, opt_state), (x, y) = head_step(args.qubits, knobs)
    info = kernel_info(step.lower(params, opt_state, x, y).compile().as_text())
    for _ in range(2):
        params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(steps):
            params, opt_state, loss = step(params, opt_state, x, y)
        jax.block_until_ready(loss)
        jax.profiler.stop_trace()
        total, calls = kernel_times(Path(tmp))
    kernels = [(name, t) for name, t in total.most_common() if name in info]
    step_ms = sum(t for _, t in kernels) / steps / 1e3
    print(f"n={args.qubits}: kernels sum to {step_ms:.1f} ms per step (profiler on)")
    for name, t in kernels[: args.top]:
        shape, op = info[name]
        print(
            f"{t / steps / 1e3:8.2f} ms  x{calls[name] // steps:<3d} {name[:30]:30s} "
            f"{shape[:24]:24s} {op[-60:]}"
        )


if __name__ == "__main__":
    main()
