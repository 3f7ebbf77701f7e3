"""Frozen-mode training speed: one epoch of each head over a 78,605-row feature store.

What is timed: the jitted, scanned train steps of `qcxr train --mode frozen` (Adam, batch 32,
mean BCE) over every batch of one epoch of 78,605 synthetic 2048-d feature vectors (the paper's
NIH-CXR-LT train count), for one seed. Compilation and the first chunk run before the clock
starts; validation and checkpoints are not included. CXR-8 and CXR-14 heads: a full epoch.
CXR-19 DQC: `--dqc19-steps` timed steps (default 200), extrapolated to the epoch.

    .venv/bin/python benchmarks/train_frozen_epoch.py --out benchmarks/train_frozen_epoch.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from qcxr.config import from_dict
from qcxr.labels import TASKS
from qcxr.train import parallel
from qcxr.train.data import FrozenData, Split
from qcxr.train.frozen import FrozenTrainer
from qcxr.train.runbook import RunBook

ROWS = 78_605  # Sec. III-B / Table I: NIH-CXR-LT training images as printed in the paper


def synthetic(task: str, rows: int, dim: int = 2048) -> FrozenData:
    rng = np.random.default_rng(0)
    names = TASKS[task]
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    y = (rng.random((rows, len(names))) < 0.1).astype(np.float32)
    train = Split([str(i) for i in range(rows)], y, list(names), "synthetic", x)
    val = Split(train.ids[:256], y[:256], list(names), "synthetic", x[:256])
    return FrozenData(train, val, {}, "synthetic")


def time_epoch(task: str, head: str, rows: int, max_steps: int | None, tmp: Path) -> dict:
    data = synthetic(task, rows)
    config = from_dict(
        {"task": task, "model": {"head": head}, "train": {"mode": "frozen", "checkpoint_every": 0}}
    )
    trainer = FrozenTrainer(config, data, parallel.data_mesh(), progress=False)
    book = RunBook(config, tmp / f"{task}-{head}", resume=False, steps_per_epoch=1)
    state = parallel.replicate(trainer.initial_states([book]), trainer.mesh)
    rows_sharding = parallel.batch_sharding(trainer.mesh, 2)
    total = trainer.steps_per_epoch
    # Chunks of a fixed length compile once; a short one where only a few steps are timed.
    chunk = trainer.chunk_steps if max_steps is None else min(10, max_steps)

    def run(start: int, end: int, state):
        index, weight, view = trainer.epoch_batches([book], 0, start, end)
        args = [parallel.shard(a, rows_sharding) for a in (index, weight, view)]
        state, losses = trainer.chunk(state, trainer.train_x, trainer.train_y, *args)
        jax.block_until_ready(losses)
        return state

    began = time.perf_counter()
    state = run(0, chunk, state)  # compile + first chunk
    compile_s = time.perf_counter() - began
    steps = total if max_steps is None else min(max_steps, total)
    began = time.perf_counter()
    done = 0
    while done < steps:
        size = min(chunk, steps - done)
        state = run(0, size, state)  # same data order each chunk: speed does not depend on it
        done += size
    seconds = time.perf_counter() - began
    per_step = seconds / steps
    return {
        "task": task,
        "head": head,
        "rows": rows,
        "steps_per_epoch": total,
        "timed_steps": steps,
        "timed_s": round(seconds, 3),
        "ms_per_step": round(per_step * 1e3, 3),
        "epoch_min": round(per_step * total / 60, 3),
        "extrapolated": steps < total,
        "compile_and_first_chunk_s": round(compile_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--dqc19-steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/train_frozen_epoch.json"))
    parser.add_argument("--only", nargs="*", help="task/head pairs, e.g. cxr8/dqc")
    args = parser.parse_args()
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("cxr8", "cxr14", "cxr19"):
            for head in ("cdl", "dqc"):
                if args.only and f"{task}/{head}" not in args.only:
                    continue
                limit = args.dqc19_steps if (task, head) == ("cxr19", "dqc") else None
                result = time_epoch(task, head, args.rows, limit, Path(tmp))
                print(json.dumps(result), flush=True)
                results.append(result)
    device = jax.devices()[0]
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{device.platform} device(s) ({device.device_kind})",
        "jax": jax.__version__,
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
