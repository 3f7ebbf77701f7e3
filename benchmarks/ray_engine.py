"""Overhead of `qcxr run --engine ray` against the local engine, and 1 vs 2 Ray CPU slots.

    python benchmarks/ray_engine.py [--epochs 3] [--repeats 1]

The grid: 4 small frozen-mode runs (cdl, dqc x seeds 0, 1) on synthetic features (the tests'
frozen_data, 640 training rows of 32 features), `resources: {cpus: 1}`. In frozen mode a cell's
seeds train together, so the 4 runs are 2 Ray tasks. Each measurement is one fresh `qcxr run`
process into a fresh output directory (so every one pays its own JAX compilation), timed end to
end. Also timed: a bare local Ray start-up + shutdown, and the round trip of an empty task.
Results are appended to benchmarks/ray_engine.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed_run(grid: Path, out: Path, study: Path, features: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "qcxr.cli", "run", str(grid), "--out", str(out)]
    cmd += ["--study", str(study), "--features", str(features), "--no-progress", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def ray_bare() -> tuple[float, float]:
    """(seconds of ray.init + shutdown of a 2-CPU local instance, of one empty task's round
    trip, the worker already started)."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")

    @ray.remote
    def nothing() -> int:
        return 0

    ray.get(nothing.remote())  # starts a worker
    trips = []
    for _ in range(20):
        t = time.perf_counter()
        ray.get(nothing.remote())
        trips.append(time.perf_counter() - t)
    ray.shutdown()
    return time.perf_counter() - start, sorted(trips)[len(trips) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import ray

    from test_train_grid import write_study_and_features
    from test_train_support import frozen_data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study, features = write_study_and_features(tmp, frozen_data(n_train=640))
        grid = tmp / "bench.yaml"
        grid.write_text(
            yaml.safe_dump(
                {
                    "experiment": "bench",
                    "grid": {"model.head": ["cdl", "dqc"], "train.seed": [0, 1]},
                    "train": {"mode": "frozen", "max_epochs": args.epochs, "patience": 50},
                    "resources": {"cpus": 1},
                }
            )
        )
        rows: dict[str, list[float]] = {"local": [], "ray, 1 slot": [], "ray, 2 slots": []}
        for k in range(args.repeats):
            rows["local"].append(timed_run(grid, tmp / f"l{k}" / "bench", study, features))
            for slots in (1, 2):
                rows[f"ray, {slots} slot{'s' if slots > 1 else ''}"].append(
                    timed_run(
                        grid,
                        tmp / f"r{slots}-{k}" / "bench",
                        study,
                        features,
                        "--engine",
                        "ray",
                        "--num-cpus",
                        str(slots),
                    )
                )
        startup, trip = ray_bare()

    best = {k: min(v) for k, v in rows.items()}
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    import jax

    lines = [
        f"\n## {stamp}, {platform.node()} ({__import__('os').cpu_count()} CPUs), "
        f"Python {platform.python_version()}, ray {ray.__version__}, jax {jax.__version__}\n",
        f"4 frozen-mode runs (2 cells = 2 Ray tasks), {args.epochs} epochs, 640 training rows; "
        f"best of {args.repeats}; each a fresh `qcxr run` process.\n",
        "| engine | wall s | vs local |",
        "|---|---|---|",
    ]
    for name, value in best.items():
        lines.append(f"| {name} | {value:.1f} | {value - best['local']:+.1f} |")
    lines += [
        "",
        f"Bare local Ray instance (2 CPUs): init + first task + shutdown {startup:.1f} s; "
        f"an empty task's round trip {trip * 1e3:.2f} ms (median of 20).",
        "The Ray-only cost is the start-up and the per-task round trip above; a slot's task runs "
        "JAX on that slot's CPUs only, so fewer slots than cores also trains on fewer threads.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "ray_engine.md"
    if not out.exists():
        out.write_text("# Ray engine overhead (`benchmarks/ray_engine.py`)\n")
    with out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
