"""Shared helpers for the training tests (imported by tests/test_train_*.py and their children).

Synthetic frozen-feature data with a learnable signal, a tiny synthetic study, small configs,
history comparison, and the subprocess entry points of the kill/resume and two-device tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

TESTS = Path(__file__).resolve().parent


def frozen_data(
    seed: int = 0,
    n_train: int = 640,
    n_val: int = 256,
    n_test: int = 128,
    dim: int = 32,
    task: str = "cxr8",
    noise_val: bool = False,
):
    """FrozenData whose labels follow a fixed linear rule of the features (learnable)."""
    from qcxr.labels import TASKS
    from qcxr.train.data import FrozenData, Split

    names = TASKS[task]
    rng = np.random.default_rng(seed)
    rule = rng.normal(size=(dim, len(names))) / np.sqrt(dim) * 3.0

    def split(n: int, tag: str, noise: bool = False) -> Split:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        score = x @ rule if not noise else rng.normal(size=(n, len(names))) * 3.0
        y = (score + 0.5 * rng.normal(size=score.shape) > 1.5).astype(np.float32)
        return Split([f"{tag}{i:05d}.png" for i in range(n)], y, list(names), f"sha-{tag}", x)

    return FrozenData(
        split(n_train, "tr"),
        split(n_val, "va", noise_val),
        {"nih": split(n_test, "te"), "mimic": split(n_test // 2, "mi")},
        "synthetic-features",
    )


def config(**sections):
    """A frozen-mode Config with small-data settings, overridden by nested `sections`."""
    from qcxr.config import from_dict, merge

    base = {"train": {"mode": "frozen", "learning_rate": 3e-3, "max_epochs": 4}}
    return from_dict(merge(base, sections))


def history_without_time(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "history.csv").drop(columns=["epoch_time"])


# ------------------------------------------------------------------ finetune study and children


def small_study(root: Path, seed: int = 0) -> Path:
    """A tiny synthetic study (real file formats) for finetune tests; made once per root."""
    from qcxr.data.synthetic import generate_study

    if not (root / "nih").is_dir():
        generate_study(
            root,
            n_train=32,
            n_val=16,
            n_test=8,
            n_mimic=4,
            image_size=224,
            seed=seed,
            progress=False,
        )
    return root


def finetune_config(study: Path, cache: Path, **sections):
    """A finetune Config on the tiny backbone (same code path as ResNet50)."""
    from qcxr.config import from_dict, merge

    base = {
        "data": {"study": str(study), "cache": str(cache), "loader_threads": 2},
        "model": {"backbone": "tiny"},
        "train": {
            "mode": "finetune",
            "batch_size": 16,
            "eval_batch_size": 32,
            "max_epochs": 2,
            "learning_rate": 3e-3,
            "checkpoint_every": 2,
        },
    }
    return from_dict(merge(base, sections))


def wait_for_marker(proc, marker: Path, what: str, timeout: float = 240) -> None:
    """Wait until a child process writes `marker`; fail the test if it ends or times out."""
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"child ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"child never reached {what}")
        time.sleep(0.1)


def killed_child(spec: dict, tmp_path: Path) -> dict:
    """Start the child, wait for it to reach spec["kill_at"], SIGKILL it."""
    import json
    import os
    import signal
    import subprocess

    spec = {**spec, "marker": str(tmp_path / "marker.json")}
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "test_train_support.py"), "child", json.dumps(spec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_marker(proc, Path(spec["marker"]), "the kill point")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return spec


def assert_same_run(resumed: Path, reference: Path) -> None:
    import jax

    from qcxr.rundir import read_status as run_status
    from qcxr.train.checkpoint import RunCheckpoints

    pd.testing.assert_frame_equal(history_without_time(resumed), history_without_time(reference))
    for kind in ("latest", "best"):
        a, b = RunCheckpoints(resumed), RunCheckpoints(reference)
        tree_a = a.restore_best()[0] if kind == "best" else _latest_tree(a)
        tree_b = b.restore_best()[0] if kind == "best" else _latest_tree(b)
        assert jax.tree.structure(tree_a) == jax.tree.structure(tree_b)
        for x, y in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    pd.testing.assert_frame_equal(
        pd.read_parquet(resumed / "predictions-nih.parquet"),
        pd.read_parquet(reference / "predictions-nih.parquet"),
    )
    assert run_status(resumed)["status"] == "finished"


def _latest_tree(checkpoints):
    import orbax.checkpoint as ocp

    manager = checkpoints._latest
    return manager.restore(
        manager.latest_step(), args=ocp.args.Composite(tree=ocp.args.StandardRestore())
    )["tree"]


def child(spec: dict) -> None:
    """Run in a subprocess: train as `spec` says; at `kill_at` (epoch, position) write the
    marker file and block, so the parent can kill this process at a known point."""
    import json
    import time

    from qcxr.train.finetune import train_finetune
    from qcxr.train.frozen import train_frozen

    kill_at = tuple(spec["kill_at"]) if spec.get("kill_at") else None
    if spec.get("kill_after_best") is not None:
        stop_after_best_save(spec["kill_after_best"], Path(spec["marker"]))

    def hook(cfg, epoch, position, ids, aug):
        if kill_at and (epoch, position) == kill_at and cfg.train.seed == spec["seeds"][0]:
            Path(spec["marker"]).write_text(json.dumps([epoch, position]))
            time.sleep(600)

    if spec["mode"] == "frozen":
        cfg = config(**spec["sections"])
        cfgs = [_with_seed(cfg, s) for s in spec["seeds"]]
        dirs = [Path(spec["out"]) / f"seed-{s}" for s in spec["seeds"]]
        train_frozen(cfgs, dirs, frozen_data(**spec.get("data", {})), progress=False, on_batch=hook)
    else:
        cfg = finetune_config(Path(spec["study"]), Path(spec["cache"]), **spec["sections"])
        train_finetune(cfg, Path(spec["out"]) / "seed-0", progress=False, on_batch=hook)


def stop_after_best_save(epoch: int, marker: Path) -> None:
    """Block (to be killed) right after the best checkpoint of epoch `epoch` (1-based) is saved,
    before the latest checkpoint of the same epoch end."""
    import json
    import time

    from qcxr.train.checkpoint import RunCheckpoints

    save_best = RunCheckpoints.save_best

    def saved_then_blocked(self, step, variables, meta):
        save_best(self, step, variables, meta)
        if meta["epoch"] == epoch:
            marker.write_text(json.dumps(meta))
            time.sleep(600)

    RunCheckpoints.save_best = saved_then_blocked


def _with_seed(cfg, seed: int):
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def two_devices_child(spec: dict) -> dict:
    """Run with 2 host devices: the same training on a 1-device and a 2-device mesh."""
    import jax

    from qcxr.train import parallel
    from qcxr.train.finetune import train_finetune
    from qcxr.train.frozen import train_frozen

    assert jax.device_count() == 2, jax.devices()
    out = Path(spec["out"])
    losses = {}
    for count in (1, 2):
        mesh = parallel.data_mesh(jax.devices()[:count])
        cfg = config(train={"max_epochs": 2})
        dirs = [out / f"frozen-{count}" / f"seed-{s}" for s in (0, 1)]
        train_frozen(
            [_with_seed(cfg, 0), _with_seed(cfg, 1)],
            dirs,
            frozen_data(n_train=136),
            progress=False,
            mesh=mesh,
        )
        losses[f"frozen-{count}"] = [history_without_time(d).to_numpy(float).tolist() for d in dirs]
        if spec.get("study"):
            cfg = finetune_config(Path(spec["study"]), Path(spec["cache"]), train={"max_epochs": 1})
            run = out / f"finetune-{count}" / "seed-0"
            train_finetune(cfg, run, progress=False, mesh=mesh)
            losses[f"finetune-{count}"] = [history_without_time(run).to_numpy(float).tolist()]
    return losses


def multihost_child(spec: dict) -> dict:
    """One of several processes joined by jax.distributed (the QCXR_* variables): a frozen-mode
    run of two seeds over every process's devices into the shared spec["out"]. Records what this
    process opened for writing, renamed or removed under spec["out"] (Python-level file access;
    Orbax's tensorstore writes are not seen) so that the parent can check who wrote what."""
    import os

    import jax

    from qcxr.train import parallel
    from qcxr.train.frozen import train_frozen

    out = Path(spec["out"]).absolute()
    touched: list[str] = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | Path):
            path, mode, flags = args
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
            writes = writes or bool(isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
            paths = [path] if writes else []
        elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            paths = [a for a in args[:2] if isinstance(a, str | Path)]
        else:
            return
        for path in paths:
            path = Path(path).absolute()
            if path.is_relative_to(out):
                touched.append(f"{event} {path.relative_to(out)}")

    sys.addaudithook(audit)
    joined = parallel.initialize_distributed()
    cfg = config(train=spec.get("train", {"max_epochs": 2}))
    seeds = spec.get("seeds", [0, 1])
    dirs = [out / f"seed-{s}" for s in seeds]
    results = train_frozen(
        [_with_seed(cfg, s) for s in seeds],
        dirs,
        frozen_data(n_train=136),
        progress=False,
        mesh=parallel.data_mesh(),
    )
    parallel.barrier("qcxr-multihost-child-end")
    return {
        "joined": joined,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "status": [r.status for r in results],
        "touched": sorted(set(touched)),
    }


# ------------------------------------------------------------------ preemption (SIGTERM/SIGINT)


def signalled_child(spec: dict, tmp_path: Path, signal_name: str) -> tuple[list[dict], str]:
    """Start preempt_child, wait for it to reach spec["signal_at"], send it a real
    `signal_name` (by pid); it must end by itself with rc 0. (its printed results, its stderr)"""
    import json
    import os
    import signal
    import subprocess

    spec = {**spec, "marker": str(tmp_path / "marker.json")}
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    code = "import json, sys, test_train_support as s; s.preempt_child(json.loads(sys.argv[1]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_marker(proc, Path(spec["marker"]), "the signal point")
        os.kill(proc.pid, getattr(signal, signal_name))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result printed: {out[-2000:]} {err[-2000:]}"
    return json.loads(lines[-1].removeprefix("RESULT ")), err


def preempt_child(spec: dict) -> None:
    """Run in a subprocess: train as `spec` says; at `signal_at` (epoch, position) of the first
    seed write the marker file and wait (up to 60 s) until a signal has asked training to stop;
    print the results as one RESULT line."""
    import dataclasses
    import json
    import time

    from qcxr.train import interrupt
    from qcxr.train.finetune import train_finetune
    from qcxr.train.frozen import train_frozen

    signal_at = tuple(spec["signal_at"])

    def hook(cfg, epoch, position, ids, aug):
        if (epoch, position) == signal_at and cfg.train.seed == spec["seeds"][0]:
            Path(spec["marker"]).write_text(json.dumps([epoch, position]))
            deadline = time.monotonic() + 60
            while interrupt.requested() is None and time.monotonic() < deadline:
                time.sleep(0.02)

    if spec["mode"] == "frozen":
        cfg = config(**spec["sections"])
        cfgs = [_with_seed(cfg, s) for s in spec["seeds"]]
        dirs = [Path(spec["out"]) / f"seed-{s}" for s in spec["seeds"]]
        data = frozen_data(**spec.get("data", {}))
        results = train_frozen(cfgs, dirs, data, progress=False, on_batch=hook)
    else:
        cfg = finetune_config(Path(spec["study"]), Path(spec["cache"]), **spec["sections"])
        results = [train_finetune(cfg, Path(spec["out"]) / "seed-0", progress=False, on_batch=hook)]
    rows = [{**dataclasses.asdict(r), "run_dir": str(r.run_dir)} for r in results]
    print("RESULT " + json.dumps(rows, default=str), flush=True)


if __name__ == "__main__":
    import json

    kind, spec_json = sys.argv[1], sys.argv[2]
    if kind == "child":
        child(json.loads(spec_json))
    else:
        print("RESULT " + json.dumps(two_devices_child(json.loads(spec_json))))
