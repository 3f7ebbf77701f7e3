"""Disk used by a run's checkpoints over a long frozen-mode run, sampled while it trains.

    python benchmarks/checkpoint_disk.py [--epochs 60] [--compare-src OLD_CHECKOUT/src]

Trains one CDL head on synthetic features (2048 wide, 320 rows, 10 batches per epoch,
a latest checkpoint every 2 batches) and samples the size of <run>/checkpoints every 50 ms.
With --compare-src the same run is made, in its own process, by another checkout's code (say
the commit before the retention change), so the two are measured side by side. Results go to
benchmarks/checkpoint_disk.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from qcxr.versions import package_versions


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # removed while we looked
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def features(rows: int, dim: int = 2048):
    import numpy as np

    from qcxr.labels import TASKS
    from qcxr.train.data import FrozenData, Split

    rng = np.random.default_rng(0)
    names = list(TASKS["cxr8"])

    def split(n: int, tag: str) -> Split:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        y = (rng.uniform(size=(n, len(names))) < 0.2).astype(np.float32)
        return Split([f"{tag}{i}" for i in range(n)], y, names, tag, x)

    return FrozenData(split(rows, "tr"), split(64, "va"), {"nih": split(64, "te")}, "synthetic")


def child(epochs: int, out: Path) -> dict:
    """Train in this process and sample the checkpoints' size meanwhile."""
    try:
        from qcxr.train.frozen import train_frozen
    except ImportError:  # an older checkout
        from qcxr.train.loop import train_frozen
    from qcxr.config import from_dict

    config = from_dict(
        {
            "train": {
                "mode": "frozen",
                "max_epochs": epochs,
                "patience": epochs,
                "checkpoint_every": 2,
                "learning_rate": 1e-3,
            }
        }
    )
    run = out / "run"
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(tree_bytes(run / "checkpoints"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    train_frozen([config], [run], features(320), progress=False)
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    steps = {
        kind: sorted(p.name for p in (run / "checkpoints" / kind).iterdir())
        for kind in ("latest", "best")
    }
    return {
        "epochs": epochs,
        "seconds": round(seconds, 1),
        "peak_mib": max(samples) / 2**20,
        "final_mib": tree_bytes(run / "checkpoints") / 2**20,
        "entries": steps,
    }


def measure(src: str | None, epochs: int) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as tmp:
        code = [sys.executable, __file__, "--child", "--epochs", str(epochs), "--out", tmp]
        done = subprocess.run(code, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--compare-src", help="another checkout's src/ to run the same way")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.epochs, args.out)))
        return
    rows = {"this checkout": measure(None, args.epochs)}
    if args.compare_src:
        rows[args.compare_src] = measure(args.compare_src, args.epochs)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"## {stamp}, {platform.node()} ({os.cpu_count()} CPUs), Python "
        f"{platform.python_version()}, "
        + ", ".join(
            f"{k} {v}"
            for k, v in package_versions(["jax", "orbax-checkpoint"]).items()
            if k != "python"
        ),  # fmt: skip
        "",
        f"One frozen CDL run, {args.epochs} epochs x 10 batches, latest every 2 batches "
        "(5 saves per epoch), sizes of <run>/checkpoints sampled every 50 ms.",
        "",
        "| code | seconds | peak MiB | final MiB | latest/ | best/ |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['seconds']} | {r['peak_mib']:.2f} | {r['final_mib']:.2f} | "
            f"{', '.join(r['entries']['latest'])} | {', '.join(r['entries']['best'])} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    record = Path(__file__).with_suffix(".md")
    header = "# Checkpoint disk use (`benchmarks/checkpoint_disk.py`)\n\n"
    old = record.read_text() if record.is_file() else header
    record.write_text(old + "\n" + text)


if __name__ == "__main__":
    main()
