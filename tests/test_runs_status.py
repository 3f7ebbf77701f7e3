"""qcxr.runs_status: `qcxr status RUNS_DIR` / `qcxr run GRID --status`, on hand-built runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from qcxr import config as config_lib
from qcxr import rundir, runs_status
from qcxr.cli import dispatch

HOLD_LOCK = "import sys; from qcxr import rundir; rundir.lock(sys.argv[1]); print('locked', flush=True); input()"  # noqa: E501


def _config(task="cxr8", head="cdl", seed=0, max_epochs=10):
    return config_lib.from_dict(
        {"task": task, "model": {"head": head}, "train": {"seed": seed, "max_epochs": max_epochs}}
    )


def _run(experiment, task="cxr8", head="cdl", seed=0, *, epochs=(), steps=2, max_epochs=10):
    """A run directory with config.yaml and a history.csv: `steps` step rows per epoch, then an
    epoch row (val_loss, epoch_time) for each (val_loss, epoch_time) in `epochs`."""
    config = _config(task, head, seed, max_epochs)
    run_dir = rundir.config_run_path(experiment, config)
    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, config, resume=False)
    lines = [",".join(rundir.HISTORY_COLUMNS)]
    step = 0
    for epoch, (val_loss, seconds) in enumerate(epochs, start=1):
        for _ in range(steps):
            step += 1
            lines.append(f"{epoch},{step},0.5,,")
        lines.append(f"{epoch},{step},0.4,{val_loss},{seconds}")
    (run_dir / rundir.HISTORY).write_text("\n".join(lines) + "\n")
    return run_dir


def _checkpoint(run_dir):
    (run_dir / rundir.CHECKPOINTS / "latest" / "4").mkdir(parents=True)
    (run_dir / rundir.CHECKPOINTS / "latest" / "4" / "meta.json").write_text("{}")


def _sessions(run_dir, count):
    sessions = [
        {"started": f"2025-01-0{i + 1}T10:00:00+0000", "resumed": i > 0} for i in range(count)
    ]
    rundir.write_json(run_dir / rundir.VERSIONS, {"python": "3.12", "sessions": sessions})


def _hold(run_dir):
    """A child process that holds the run's lock until killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def _end(child):
    child.kill()
    child.wait(timeout=10)


def _json_rows(runs_dir, capsys):
    parser = argparse.ArgumentParser(prog="qcxr")
    runs_status.register(parser.add_subparsers(dest="command"))
    assert dispatch(parser, ["status", str(runs_dir), "--json"]) == 0
    return {row["run_dir"]: row for row in json.loads(capsys.readouterr().out)}


@pytest.fixture
def experiment(tmp_path):
    """One run of every state under tmp_path/paper; the names of the rows to expect."""
    exp = tmp_path / "paper"
    runs = {}

    runs["done"] = d = _run(exp, "cxr8", "cdl", 0, epochs=[(0.5, 10.0), (0.3, 11.5), (0.4, 12.0)])
    _checkpoint(d)
    _sessions(d, 2)
    rundir.write_status(
        d,
        {"status": "finished", "reason": "early_stop", "best_epoch": 2, "best_val_loss": 0.3,
         "epochs": 3, "steps": 6},
    )  # fmt: skip

    runs["failed"] = d = _run(exp, "cxr8", "cdl", 1, epochs=[(0.6, 5.0)])
    _checkpoint(d)
    message = f"{d}: validation loss is nan after epoch 2; run stopped.\nTry a lower rate."
    rundir.write_status(d, {"status": "failed", "reason": "non-finite loss", "message": message})

    runs["preempted"] = d = _run(exp, "cxr8", "dqc", 0, epochs=[(0.7, 3.0), (0.65, 3.5)])
    _checkpoint(d)
    rundir.write_status(d, {"status": "preempted", "message": "SIGTERM at step 5; resume"})

    runs["partial"] = d = _run(exp, "cxr8", "dqc", 1, epochs=[(0.9, 2.0)])
    _checkpoint(d)

    runs["not started"] = _run(exp, "cxr14", "cdl", 0)  # config.yaml, no epoch, no checkpoint

    runs["running"] = d = _run(exp, "cxr14", "dqc", 0, epochs=[(0.8, 4.0)])
    _checkpoint(d)

    # a lock whose holder died: the state comes from the files (here: partial)
    runs["dead holder"] = d = _run(exp, "cxr14", "dqc", 1, epochs=[(0.85, 6.0)])
    _checkpoint(d)
    _end(_hold(d))
    assert (d / rundir.LOCK).read_text().startswith("pid ")
    return exp, runs


def test_every_state_in_the_json_rows(experiment, capsys):
    exp, runs = experiment
    child = _hold(runs["running"])
    try:
        rows = _json_rows(exp, capsys)
    finally:
        _end(child)
    assert set(rows) == {str(d) for d in runs.values()}
    row = {name: rows[str(d)] for name, d in runs.items()}

    assert row["done"] == {
        "run_dir": str(runs["done"]), "task": "cxr8", "head": "cdl", "seed": 0, "state": "done",
        "message": "", "epoch": 3, "max_epochs": 10, "best_epoch": 2, "best_val_loss": 0.3,
        "elapsed_s": 33.5, "sessions": 2, "holder": None,
    }  # fmt: skip
    failed = row["failed"]
    assert (failed["state"], failed["epoch"], failed["best_val_loss"]) == ("failed", 1, 0.6)
    assert (
        failed["message"] == f"{runs['failed']}: validation loss is nan after epoch 2; run stopped."
    )
    preempted = row["preempted"]
    assert (preempted["state"], preempted["head"], preempted["seed"]) == ("preempted", "dqc", 0)
    assert preempted["message"] == "SIGTERM at step 5; resume"
    assert (preempted["epoch"], preempted["best_epoch"], preempted["elapsed_s"]) == (2, 2, 6.5)
    assert row["partial"]["state"] == "partial" and row["partial"]["epoch"] == 1
    assert row["not started"]["state"] == "not started"
    assert (row["not started"]["task"], row["not started"]["epoch"]) == ("cxr14", 0)
    assert row["not started"]["best_val_loss"] is None and row["not started"]["elapsed_s"] == 0
    running = row["running"]
    assert running["state"] == "running" and running["holder"].startswith(f"pid {child.pid} on ")
    assert (running["epoch"], running["best_val_loss"]) == (1, 0.8)
    dead = row["dead holder"]
    assert (dead["state"], dead["holder"], dead["epoch"]) == ("partial", None, 1)

    # the holder ended: the same run is no longer running, and the probe left the lock free
    after = _json_rows(exp, capsys)[str(runs["running"])]
    assert (after["state"], after["holder"]) == ("partial", None)
    rundir.lock(runs["running"])
    rundir.unlock(runs["running"])


def test_table_names_each_run_and_counts_states(experiment, capsys):
    exp, runs = experiment
    assert runs_status.print_status(runs_status.status_rows(exp), False, relative_to=exp) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "task", "head", "seed", "state", "epoch", "best", "val",
                                "elapsed"]  # fmt: skip
    line = next(t for t in table if t.startswith("cxr8/cdl/seed-0 "))
    assert line.split() == ["cxr8/cdl/seed-0", "cxr8", "cdl", "0", "done", "3/10", "0.3000",
                            "0:00:34"]  # fmt: skip
    failed = next(t for t in table if t.startswith("cxr8/cdl/seed-1 "))
    assert "failed" in failed and failed.endswith(
        "validation loss is nan after epoch 2; run stopped."
    )
    assert table[-1] == "7 runs: 1 done, 1 preempted, 1 failed, 3 partial, 1 not started"


def test_grid_rows_include_runs_without_a_directory(tmp_path):
    exp = tmp_path / "g"
    done = _run(exp, "cxr8", "dqc", 1, epochs=[(0.2, 1.0)], max_epochs=7)
    rundir.write_status(done, {"status": "finished", "best_val_loss": 0.2, "epochs": 1})
    grid = {"experiment": "g", "train": {"max_epochs": 7},
            "grid": {"task": ["cxr8"], "model.head": ["dqc"], "train.seed": [0, 1, 2]}}  # fmt: skip
    rows = runs_status.grid_rows(grid, exp)
    assert [(r["seed"], r["state"], r["max_epochs"]) for r in rows] == [
        (0, "not started", 7), (1, "done", 7), (2, "not started", 7)
    ]  # fmt: skip
    assert rows[0]["run_dir"] == str(exp / "cxr8" / "dqc" / "seed-0")
    assert [r["seed"] for r in runs_status.grid_rows(grid, exp, shard=(1, 2))] == [2]


def test_a_directory_of_experiments_and_a_single_run(tmp_path, capsys):
    first = _run(tmp_path / "runs" / "a", epochs=[(0.5, 1.0)])
    second = _run(tmp_path / "runs" / "a-learning_rate=0.001", seed=3)
    (tmp_path / "runs" / "a" / "cache").mkdir()  # not a run
    assert runs_status.find_runs(tmp_path / "runs") == [first, second]
    assert runs_status.find_runs(first) == [first]
    assert list(_json_rows(first, capsys)) == [str(first)]
    parser = argparse.ArgumentParser(prog="qcxr")
    runs_status.register(parser.add_subparsers(dest="command"))
    assert dispatch(parser, ["status", str(tmp_path / "nowhere")]) == 1
    assert "no such directory" in capsys.readouterr().err
