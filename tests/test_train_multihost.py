"""Multi-host data parallelism, tried on one machine: two processes joined by jax.distributed
(a localhost coordinator, one CPU device each, gloo collectives) train one frozen-mode run into a
shared run directory, and get what the same run gets in one process on 2 host devices (within
rtol 2e-5; measured: bit for bit).

Only process 0 may write the run's files (history.csv, config.yaml, versions.json, predictions,
status.json, the lock); Orbax checkpoints are saved by every process together. Each child
records what it opened for writing, renamed or removed under the run directory (Python-level:
Orbax's own tensorstore writes are not seen), and process 1's list must be empty.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_train_support import TESTS, history_without_time

TIMEOUT = 240  # seconds for the whole group of children: a hang fails the test, not the suite
SEEDS = (0, 1)
ENV_DROP = (
    "XLA_FLAGS",
    "QCXR_COORDINATOR",
    "QCXR_NUM_PROCESSES",
    "QCXR_PROCESS_ID",
    "QCXR_LOCAL_DEVICES",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "JAX_LOCAL_DEVICE_IDS",
)
CHILD = (
    "import json, sys, test_train_support as s; "
    "print('RESULT ' + json.dumps(s.multihost_child(json.loads(sys.argv[1]))), flush=True)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(out: Path, log: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    base = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    path = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    full = {**base, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path, **env}
    spec = json.dumps({"out": str(out), "train": {"max_epochs": 2, "checkpoint_every": 3}})
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, spec], env=full, stdout=sink, stderr=subprocess.STDOUT
        )
    return proc, log


def finish(children: list[tuple[subprocess.Popen, Path]]) -> list[dict]:
    """Every child's RESULT; a child that fails or outlives TIMEOUT fails the test (all killed)."""
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc, log in children:
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{log.name}: no result in {TIMEOUT} s:\n{log.read_text()[-3000:]}")
            if proc.returncode != 0:
                pytest.fail(f"{log.name}: exit {proc.returncode}:\n{log.read_text()[-4000:]}")
    finally:
        for proc, _ in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    results = []
    for _, log in children:
        lines = [x for x in log.read_text().splitlines() if x.startswith("RESULT ")]
        assert lines, log.read_text()[-3000:]
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The two-process run, and the same run in one process on 2 host devices (that one equals
    the run on 1 device within rtol 2e-5: tests/test_train_parallel.py)."""
    root = tmp_path_factory.mktemp("multihost")
    coordinator = f"localhost:{free_port()}"
    began = time.perf_counter()
    children = [
        start(
            root / "two-processes",
            root / f"process-{i}.log",
            QCXR_COORDINATOR=coordinator,
            QCXR_NUM_PROCESSES="2",
            QCXR_PROCESS_ID=str(i),
        )
        for i in (0, 1)
    ]
    children.append(
        start(
            root / "two-devices",
            root / "two-devices.log",
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
        )
    )
    results = finish(children)
    print(f"three children in {time.perf_counter() - began:.1f} s")
    return {"root": root, "results": results}


def test_processes_joined(runs):
    main, other, two = runs["results"]
    assert [r["process_index"] for r in (main, other)] == [0, 1]
    for r in (main, other):
        assert r["joined"] and r["process_count"] == 2
        assert (r["device_count"], r["local_device_count"]) == (2, 1)
        assert r["status"] == ["finished"] * len(SEEDS)
    assert not two["joined"] and (two["process_count"], two["device_count"]) == (1, 2)


def test_only_the_main_process_writes(runs):
    main, other = runs["results"][:2]
    assert other["touched"] == []
    assert any(t.endswith("history.csv") for t in main["touched"])
    assert not list(Path(runs["root"], "two-processes").glob("*/*.tmp"))


def test_two_processes_equal_one_process(runs):
    import jax

    from qcxr.rundir import read_status
    from qcxr.train.checkpoint import RunCheckpoints

    root = runs["root"]
    for seed in SEEDS:
        a, b = root / "two-processes" / f"seed-{seed}", root / "two-devices" / f"seed-{seed}"
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        ha, hb = history_without_time(a), history_without_time(b)
        assert list(ha.columns) == list(hb.columns) and ha.shape == hb.shape
        assert (ha[["epoch", "step"]].to_numpy() == hb[["epoch", "step"]].to_numpy()).all()
        np.testing.assert_allclose(
            ha.to_numpy(float), hb.to_numpy(float), rtol=2e-5, atol=1e-6, equal_nan=True
        )
        for name in ("nih", "mimic"):
            pa = pd.read_parquet(a / f"predictions-{name}.parquet")
            pb = pd.read_parquet(b / f"predictions-{name}.parquet")
            assert list(pa.columns) == list(pb.columns) and list(pa["id"]) == list(pb["id"])
            numbers = [c for c in pa.columns if c != "id"]
            np.testing.assert_allclose(
                pa[numbers].to_numpy(float), pb[numbers].to_numpy(float), rtol=2e-5, atol=1e-6
            )
        best = []
        for run in (a, b):
            checkpoints = RunCheckpoints(run)
            try:
                best.append(checkpoints.restore_best())
            finally:
                checkpoints.close()
        (va, ma), (vb, mb) = best
        assert ma["epoch"] == mb["epoch"] and ma["step"] == mb["step"]
        np.testing.assert_allclose(ma["val_loss"], mb["val_loss"], rtol=2e-5)
        assert jax.tree.structure(va) == jax.tree.structure(vb)
        for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)
        sa, sb = read_status(a), read_status(b)
        assert sa["status"] == sb["status"] == "finished"
        assert (sa["epochs"], sa["steps"]) == (sb["epochs"], sb["steps"])


def test_distributed_settings_from_environment(monkeypatch):
    from qcxr.train import parallel

    for name in ENV_DROP:
        monkeypatch.delenv(name, raising=False)
    for name in ("COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not parallel.multihost_requested() and parallel.distributed_settings() == {}
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "otherhost:1")
    monkeypatch.setenv("QCXR_COORDINATOR", "localhost:1234")
    monkeypatch.setenv("QCXR_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="QCXR_PROCESS_ID"):
        parallel.distributed_settings()
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv("QCXR_LOCAL_DEVICES", "0")
    assert parallel.multihost_requested()
    assert parallel.distributed_settings() == {
        "coordinator_address": "localhost:1234",
        "num_processes": 2,
        "process_id": 1,
        "local_device_ids": [0],
    }
    monkeypatch.setenv("QCXR_PROCESS_ID", "one")
    with pytest.raises(ValueError, match="not a whole number"):
        parallel.distributed_settings()
