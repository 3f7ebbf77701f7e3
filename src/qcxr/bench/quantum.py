"""`qcxr bench quantum`: the head training step, this project's simulator beside PennyLane's.

The step is the one training runs: pooled features (B, 2048) -> head -> mean BCE -> gradients
-> Adam update, under jax.jit. Each (backend, n) runs in its own process so that its peak
resident memory is its own and a crash or out-of-memory in one case does not end the others.
`--config` gives the defaults of batch and learning rate (train:), layers and entangler (model:),
warm-up and timed steps (bench:); explicit options win.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qcxr.bench.cli import add_config_argument, config_of, given
from qcxr.bench.machine import machine_info, peak_rss_mb
from qcxr.config import BenchConfig, ModelConfig, TrainConfig
from qcxr.quantum import BACKENDS, ENTANGLERS

# Each case: the head's (backend, PennyLane device), one per simulator backend of the head
# (qcxr.quantum.BACKENDS; "pennylane" on default.qubit) and PennyLane's MPS device.
HEAD_BACKENDS = {
    **{b: (b, "default.qubit" if b == "pennylane" else None) for b in BACKENDS},
    "pennylane-tensor": ("pennylane", "default.tensor"),
}
CASES = (*HEAD_BACKENDS, "cdl")  # and the classical head, for scale
CASE_NAMES = {
    "pennylane": "PennyLane default.qubit",
    "pennylane-tensor": "PennyLane default.tensor (quimb MPS)",
    "cdl": "classical head (CDL), for scale",
}
BACKEND_NAMES = {case: CASE_NAMES.get(case, f"qcxr {case}") for case in CASES}
DEFAULT_CASES = ("mps", "statevector", "pennylane")
# Past these n a case is not started: 2^n amplitudes per sample (and PennyLane's per-gate
# copies) exceed this machine's memory or any sensible time. Override with --max-qubits.
MAX_QUBITS = {"statevector": 24, "pennylane": 20}


def skip_reason(n: int, backend: str, max_qubits: dict[str, int]) -> str | None:
    """Why a case is not run, or None."""
    if n > max_qubits.get(backend, n):
        return f"not run: n > {max_qubits[backend]} (2^n amplitudes per sample)"
    if backend == "pennylane-tensor":
        import importlib.util

        if importlib.util.find_spec("quimb") is None:
            return "not run: PennyLane default.tensor needs quimb (pip install quimb)"
    return None


def head_step(
    n: int,
    backend: str,
    batch: int,
    layers: int,
    entangler: str,
    learning_rate: float = TrainConfig().learning_rate,
):
    """(jitted step, initial state, batch) for the DQC head training step."""
    from qcxr.models.heads import ClassicalHead, DressedQuantumHead

    if backend == "cdl":
        return training_step(ClassicalHead(n), n, batch, learning_rate)
    head_backend, device = HEAD_BACKENDS[backend]
    model = DressedQuantumHead(n, layers, entangler, head_backend, device)
    return training_step(model, n, batch, learning_rate)


def training_step(
    model: Any, n: int, batch: int, learning_rate: float = TrainConfig().learning_rate
):
    """(jitted step, initial state, batch) of a head module on pooled features: BCE, its
    gradients and an Adam update, as the paper's Table III times it."""
    import jax
    import jax.numpy as jnp
    import optax

    features = jax.random.normal(jax.random.PRNGKey(1), (batch, 2048), jnp.float32)
    labels = (jax.random.uniform(jax.random.PRNGKey(2), (batch, n)) < 0.2).astype(jnp.float32)
    params = model.init(jax.random.PRNGKey(0), features)["params"]
    optimizer = optax.adam(learning_rate)

    def loss_fn(p, x, y):
        return optax.sigmoid_binary_cross_entropy(model.apply({"params": p}, x), y).mean()

    @jax.jit
    def step(p, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return step, (params, optimizer.init(params)), (features, labels)


def time_case(
    n: int,
    backend: str,
    batch: int,
    layers: int,
    warmup: int,
    steps: int,
    entangler: str = "ring",
    learning_rate: float = TrainConfig().learning_rate,
) -> dict:
    """Compile + first step, then `warmup` untimed and `steps` timed steps, in this process."""
    import jax

    step, (params, opt_state), (x, y) = head_step(
        n, backend, batch, layers, entangler, learning_rate
    )
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    first = time.perf_counter() - start
    for _ in range(warmup):
        params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, x, y)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - start)
    return {
        "n": n,
        "backend": backend,
        "batch": batch,
        "layers": layers,
        "entangler": entangler,
        "compile_first_s": first,
        "step_times_s": times,
        "peak_rss_mb": peak_rss_mb(),
        "loss": float(loss),
        "device": str(jax.devices()[0].device_kind),
    }


def run_case_subprocess(n: int, backend: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, "-m", "qcxr.bench.quantum", "--case", str(n), backend,
        "--batch", str(args.batch), "--layers", str(args.layers),
        "--warmup", str(args.warmup), "--steps", str(args.steps), "--entangler", args.entangler,
        "--learning-rate", repr(args.learning_rate),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"n": n, "backend": backend, "error": f"did not finish in {args.timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"n": n, "backend": backend, "error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment() -> dict:
    import jax
    import pennylane

    machine = machine_info()
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{machine.cpu}, {machine.logical_cpus} cores",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "pennylane": pennylane.__version__,
        "device": str(jax.devices()[0].device_kind),
    }


def summarise(result: dict) -> dict:
    if "error" in result:
        return {"n": result["n"], "backend": result["backend"], "error": result["error"]}
    times = result["step_times_s"]
    return {
        "n": result["n"],
        "backend": result["backend"],
        "steps": len(times),
        "mean_s": statistics.fmean(times),
        "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "compile_first_s": result["compile_first_s"],
        "peak_rss_mb": result["peak_rss_mb"],
    }


def markdown(rows: list[dict], env: dict, args: argparse.Namespace) -> str:
    lines = [
        f"# Head training step: qcxr's simulators vs PennyLane ({env['date']})",
        "",
        f"Machine: {env['machine']}; device {env['device']}; Python {env['python']}, "
        f"JAX {env['jax']}, PennyLane {env['pennylane']}.",
        f"Step: features (B={args.batch}, 2048) -> DQC head (L={args.layers}, {args.entangler}) "
        "-> mean BCE "
        f"-> grads -> Adam; {args.warmup} warm-up then {args.steps} timed steps (jit).",
        *(
            [f"PennyLane: at most {args.pennylane_max_steps} warm-up and timed steps each."]
            if args.pennylane_max_steps is not None
            else []
        ),
        "",
        "| n | backend | step (s) | compile + first step (s) | peak RSS (MB) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    by_n: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["backend"]] = row
    for n, cases in sorted(by_n.items()):
        ref = cases.get("pennylane", {}).get("mean_s")
        for backend, row in cases.items():
            if row.get("error"):
                error = row["error"]
                shown = error if error.startswith("not run") else f"failed: {error}"
                lines.append(f"| {n} | {BACKEND_NAMES[backend]} | {shown} | | | |")
                continue
            compared = ref and backend not in ("pennylane", "cdl")
            speedup = f"{ref / row['mean_s']:.0f}x" if compared else ""
            lines.append(
                f"| {n} | {BACKEND_NAMES[backend]} | {row['mean_s']:.4f} +- {row['std_s']:.4f} "
                f"| {row['compile_first_s']:.2f} | {row['peak_rss_mb']:.0f} | {speedup} |"
            )
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qcxr bench quantum`; those left unset come from --config (`resolved`)."""
    train, model, bench = TrainConfig(), ModelConfig(), BenchConfig()
    limits = ", ".join(f"{backend} {n}" for backend, n in MAX_QUBITS.items())
    add_config_argument(
        parser,
        "train.batch_size and learning_rate, model.num_layers and entangler, bench.warmup "
        "and steps",
    )
    parser.add_argument("--qubits", type=int, nargs="+", default=[8, 14, 19],
                        help="n, qubits = labels (default: the paper's 8 14 19)")  # fmt: skip
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_CASES), choices=CASES,
                        help="the simulators to time side by side")  # fmt: skip
    parser.add_argument(
        "--entangler", choices=ENTANGLERS, help=f"default: model.entangler ({model.entangler})"
    )
    parser.add_argument("--max-qubits", nargs=2, action="append", metavar=("BACKEND", "N"),
                        help=f"run BACKEND up to N qubits (defaults: {limits})")  # fmt: skip
    parser.add_argument("--batch", type=int, help=f"default: train.batch_size ({train.batch_size})")
    parser.add_argument(
        "--layers", type=int, help=f"default: model.num_layers ({model.num_layers})"
    )
    parser.add_argument("--warmup", type=int, help=f"default: bench.warmup ({bench.warmup})")
    parser.add_argument("--steps", type=int, help=f"default: bench.steps ({bench.steps})")
    parser.add_argument("--pennylane-max-steps", type=int, default=None,
                        help="cap warm-up and timed steps for PennyLane (slow at large n)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="results directory (%(default)s)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def resolved(args: argparse.Namespace) -> argparse.Namespace:
    """The options with every unset one taken from --config (else the paper's defaults)."""
    config = config_of(args)
    return argparse.Namespace(
        **{
            **vars(args),
            "batch": given(args.batch, config.train.batch_size),
            "learning_rate": config.train.learning_rate,
            "layers": given(args.layers, config.model.num_layers),
            "entangler": given(args.entangler, config.model.entangler),
            "warmup": given(args.warmup, config.bench.warmup),
            "steps": given(args.steps, config.bench.steps),
        }
    )


def measure(args: argparse.Namespace) -> list[dict]:
    """One summary row per (n, backend): its times, or why it has none."""
    max_qubits = {**MAX_QUBITS, **{b: int(m) for b, m in args.max_qubits or []}}
    rows = []
    for n in args.qubits:
        for backend in args.backends:
            reason = skip_reason(n, backend, max_qubits)
            if reason:
                print(f"[bench quantum] n={n} {backend}: {reason}", file=sys.stderr, flush=True)
                rows.append({"n": n, "backend": backend, "error": reason})
                continue
            case_args = argparse.Namespace(**vars(args))
            if backend.startswith("pennylane") and args.pennylane_max_steps is not None:
                case_args.warmup = min(args.warmup, args.pennylane_max_steps)
                case_args.steps = min(args.steps, args.pennylane_max_steps)
            print(f"[bench quantum] n={n} {backend} ...", file=sys.stderr, flush=True)
            row = summarise(run_case_subprocess(n, backend, case_args))
            print(f"[bench quantum]   {row}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


FIELDS = ("n", "backend", "steps", "mean_s", "std_s", "compile_first_s", "peak_rss_mb", "error")


def run(args: argparse.Namespace) -> int:
    args = resolved(args)
    env = environment()
    rows = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("-", "")
    csv_path = args.out / f"quantum-{stamp}.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    md_path = args.out / f"quantum-{stamp}.md"
    md_path.write_text(markdown(rows, env, args))
    if args.json:
        print(json.dumps({"environment": env, "rows": rows}, indent=2))
    else:
        print(md_path.read_text())
        print(f"wrote {csv_path} and {md_path}")
    return 0


def _main_case(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", nargs=2)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--entangler", default="ring")
    parser.add_argument("--learning-rate", type=float, default=TrainConfig().learning_rate)
    args = parser.parse_args(argv)
    n, backend = int(args.case[0]), args.case[1]
    result = time_case(
        n, backend, args.batch, args.layers, args.warmup, args.steps, args.entangler,
        args.learning_rate,
    )  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    _main_case(sys.argv[1:])
