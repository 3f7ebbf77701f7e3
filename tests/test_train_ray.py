"""`qcxr run --engine ray`: a local Ray instance gives the local engine's runs, and a task whose
worker is killed mid-epoch is retried and resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from qcxr.cli import main
from qcxr.config import ConfigError
from qcxr.train.grid import read_grid
from test_train_grid import write_study_and_features
from test_train_support import assert_same_run, frozen_data, history_without_time

pytest.importorskip("ray")

HEADS = ("cdl", "dqc")


def _grid_file(tmp_path: Path, name: str, **train) -> Path:
    grid = {
        "experiment": name,
        "grid": {"model.head": list(HEADS), "train.seed": [0, 1]},
        "train": {"mode": "frozen", "max_epochs": 2, "learning_rate": 0.003, **train},
        "resources": {"cpus": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _run(path, out, study, features, *extra) -> int:
    args = ["run", str(path), "--out", str(out), "--study", str(study)]
    return main([*args, "--features", str(features), "--no-progress", *extra])


def test_resources_key_is_read_and_checked():
    assert read_grid({"grid": {}}).resources == {"cpus": 1, "gpus": 0}
    assert read_grid({"resources": {"cpus": 4, "gpus": 1}}).resources == {"cpus": 4, "gpus": 1}
    with pytest.raises(ConfigError, match=r"(?s)resources\.gpu: unknown.*resources\.cpus: 0"):
        read_grid({"resources": {"cpus": 0, "gpu": 1}})


@pytest.mark.slow  # ~66 s on 2 cores, a fifth of the suite's budget: make test-all
def test_ray_engine_gives_the_local_engines_runs(tmp_path):
    study, features = write_study_and_features(tmp_path, frozen_data(n_train=96))
    path = _grid_file(tmp_path, "mini")
    local, remote = tmp_path / "local" / "mini", tmp_path / "ray" / "mini"
    assert _run(path, local, study, features) == 0
    assert _run(path, remote, study, features, "--engine", "ray", "--num-cpus", "2") == 0
    assert not (remote / ".ray-check").exists()
    for head in HEADS:
        for seed in (0, 1):
            a, b = local / "cxr8" / head / f"seed-{seed}", remote / "cxr8" / head / f"seed-{seed}"
            pd.testing.assert_frame_equal(history_without_time(b), history_without_time(a))
            pd.testing.assert_frame_equal(
                pd.read_parquet(b / "predictions-nih.parquet"),
                pd.read_parquet(a / "predictions-nih.parquet"),
            )
            metrics_a, metrics_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
            assert metrics_a.pop("run") == str(a) and metrics_b.pop("run") == str(b)
            assert metrics_b == metrics_a
    # again: everything is finished, so nothing is dispatched and nothing retrains
    before = (remote / "cxr8" / "dqc" / "seed-0" / "history.csv").read_text()
    assert _run(path, remote, study, features, "--engine", "ray", "--num-cpus", "2") == 0
    assert (remote / "cxr8" / "dqc" / "seed-0" / "history.csv").read_text() == before


def _kill_when_checkpointed(run: Path, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the process that holds `run`'s lock once its latest checkpoint has a step."""
    while not stop.is_set():
        lock, latest = run / ".lock", run / "checkpoints" / "latest"
        steps = [p for p in latest.iterdir() if p.name.isdigit()] if latest.is_dir() else []
        if steps and lock.is_file() and not (run / "status.json").is_file():
            text = lock.read_text().split()
            if len(text) >= 2 and text[0] == "pid":
                killed["pid"], killed["steps"] = int(text[1]), sorted(p.name for p in steps)
                os.kill(int(text[1]), signal.SIGKILL)
                return
        time.sleep(0.05)


@pytest.mark.slow  # ~55 s on 2 cores: make test-all
def test_ray_task_killed_mid_epoch_is_retried_and_resumes(tmp_path):
    study, features = write_study_and_features(tmp_path, frozen_data(n_train=640))
    settings = {"max_epochs": 4, "batch_size": 16, "checkpoint_every": 8, "patience": 10}
    path = _grid_file(tmp_path, "fault", **settings)
    reference, out = tmp_path / "reference" / "fault", tmp_path / "ray" / "fault"
    assert _run(path, reference, study, features) == 0

    run = out / "cxr8" / "dqc" / "seed-1"
    killed, stop = {}, threading.Event()
    killer = threading.Thread(target=_kill_when_checkpointed, args=(run, killed, stop))
    killer.start()
    try:
        assert _run(path, out, study, features, "--engine", "ray", "--num-cpus", "2") == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "the run's worker was never killed"
    assert killed["pid"] != os.getpid()
    for head in HEADS:
        for seed in (0, 1):
            assert_same_run(
                out / "cxr8" / head / f"seed-{seed}", reference / "cxr8" / head / f"seed-{seed}"
            )
