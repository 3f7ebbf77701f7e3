"""`qcxr run --engine ray`: a grid's runs as Ray tasks, on this machine or on a Ray cluster.

Each frozen-mode cell (its unfinished seeds, trained together) or each finetune run is one Ray
task. The task calls the same training code as the local engine (grid.train_cell, so
train_frozen / train_finetune with resume=True) inside a worker, and returns its results as plain
dicts. The run directories are the shared state: the driver applies the grid's skip rules
(grid.finished_runs) before dispatch, and a task whose worker dies (killed, node lost) is re-run
by Ray (max_retries) and resumes from the run's latest checkpoint. Metrics are written by the
driver as each task's results come back.

Every node must see the output directory at the same path (a shared filesystem): the engine checks
that first, with a marker file written by the driver and read by a task on every node, and one
written by each task and read by the driver.

Each task asks the grid file's `resources: {cpus: N, gpus: M}` (defaults: 1 CPU, no GPU); its
JAX is held to that many CPU threads (XLA_FLAGS) and, without GPUs, to the CPU platform.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from qcxr import rundir
from qcxr.rundir import RunResult
from qcxr.train import interrupt
from qcxr.train.grid import AfterRun, Cell, finished_runs, planned_cells

MAX_RETRIES = 3  # re-runs of a task whose worker died; each resumes from the latest checkpoint
CHECK_DIR = ".ray-check"  # under the experiment directory, removed after the check


def _result_dict(result: RunResult) -> dict[str, Any]:
    row = dataclasses.asdict(result)
    row["run_dir"] = str(row["run_dir"])
    return row


def _result(row: dict[str, Any]) -> RunResult:
    return RunResult(**{**row, "run_dir": Path(row["run_dir"])})


def train_task(cell: Cell, todo: list[tuple[Any, Path]], progress: bool) -> list[dict[str, Any]]:
    """The body of one Ray task: train `todo` (runs of `cell`) as the local engine would."""
    from qcxr.train.grid import CellData, train_cell

    results = train_cell(cell, todo, CellData(progress), progress)
    return [_result_dict(r) for r in results]


def probe_task(check_dir: str, token: str) -> dict[str, Any]:
    """On one node: read the driver's marker, write this node's (the shared-directory check)."""
    node = f"{socket.gethostname()}-{os.getpid()}"
    marker = Path(check_dir) / "driver"
    seen = marker.is_file() and marker.read_text() == token
    written = None
    if seen:
        written = str(Path(check_dir) / f"node-{node}")
        Path(written).write_text(token)
    return {"host": socket.gethostname(), "seen": seen, "written": written}


def _worker_env(resources: dict[str, float]) -> dict[str, str]:
    """Environment of a task's worker: JAX on the task's CPUs only (and only on CPUs without
    GPUs)."""
    threads = max(1, int(resources["cpus"]))
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        flags += f"intra_op_parallelism_threads={threads}"
    env = {"XLA_FLAGS": flags.strip(), "OMP_NUM_THREADS": str(threads)}
    if not resources["gpus"] and "JAX_PLATFORMS" not in os.environ:
        env["JAX_PLATFORMS"] = "cpu"
    return env


def check_shared_dir(out_dir: Path) -> None:
    """Fail with one line unless a task on every alive node sees `out_dir` (and the driver sees
    what those tasks write there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    check = out_dir / CHECK_DIR / token
    check.mkdir(parents=True, exist_ok=True)
    try:
        (check / "driver").write_text(token)
        probe = ray.remote(probe_task)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [
            probe.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(str(check.resolve()), token)
            for n in nodes
        ]
        missing = []
        for node, answer in zip(nodes, ray.get(refs), strict=True):
            written = answer["written"]
            back = written and Path(written).is_file() and Path(written).read_text() == token
            if not back:
                missing.append(answer["host"] or node.get("NodeManagerAddress", "?"))
        if missing:
            raise ValueError(
                f"{out_dir.resolve()}: not shared with the Ray worker(s) on "
                f"{', '.join(sorted(set(missing)))}: the output directory must be on a filesystem "
                "shared by all nodes (mount it at the same path on every node, and pass --out)"
            )
    finally:
        shutil.rmtree(check, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out_dir / CHECK_DIR).rmdir()


def _init(address: str | None, num_cpus: int | None) -> bool:
    """Connect to Ray (a cluster at `address`, or a new local instance); True when this call
    started it (and so shuts it down at the end)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": "WARNING", "configure_logging": True}
    # Workers must import qcxr as this process does (an editable install, or PYTHONPATH).
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus, **quiet)
    return True


def run_grid_ray(
    config_or_path: str | Path | dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    after_run: AfterRun | None = None,
    shard: tuple[int, int] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    max_retries: int = MAX_RETRIES,
) -> list[RunResult]:
    """grid.run_grid's work on Ray: the same runs, skip/resume rules, results and files."""
    try:
        import ray
    except ImportError:
        raise ValueError(
            "--engine ray needs Ray: pip install 'qcxr[cluster]' (or pip install 'ray>=2.9')"
        ) from None
    grid, out_dir, grid_cells = planned_cells(config_or_path, out_dir, overrides, shard)
    started = _init(address, num_cpus)
    try:
        check_shared_dir(out_dir)
        return _dispatch(grid.resources, grid_cells, progress, after_run, max_retries)
    finally:
        if started:
            ray.shutdown()


def _dispatch(resources, grid_cells, progress, after_run, max_retries) -> list[RunResult]:
    import ray

    task = ray.remote(train_task).options(
        num_cpus=resources["cpus"],
        num_gpus=resources["gpus"],
        max_retries=max_retries,
        runtime_env={"env_vars": _worker_env(resources)},
    )
    order = {d: i for i, d in enumerate(d for c in grid_cells for d in c.run_dirs)}
    results: list[RunResult] = []

    def finish(result: RunResult) -> None:
        if after_run is not None:
            after_run(result)
        results.append(result)

    pending: dict[Any, list[Path]] = {}
    for cell in grid_cells:
        done, todo = finished_runs(cell)
        for result in done:
            finish(result)
        if not todo:
            continue
        if cell.configs[0].train.mode == "frozen":
            pending[task.remote(cell, todo, progress)] = [d for _, d in todo]
        else:
            for config, run_dir in todo:
                pending[task.remote(cell, [(config, run_dir)], progress)] = [run_dir]
    cancelled = False
    with interrupt.handling():  # a signal cancels the tasks: each saves and stops (preempted)
        while pending:
            if interrupt.requested() and not cancelled:
                print(
                    f"stopped by {interrupt.requested()}: stopping the Ray tasks; runs not yet "
                    "trained are left for the next `qcxr run`",
                    file=sys.stderr,
                )
                for ref in pending:
                    ray.cancel(ref)
                cancelled = True
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                run_dirs = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    continue
                except Exception as err:  # the task failed after its retries
                    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                    rows = [
                        _result_dict(RunResult(d, "failed", f"Ray task: {first}")) for d in run_dirs
                    ]
                for row in rows:
                    finish(_result(row))
    results.sort(key=lambda r: order.get(Path(r.run_dir), len(order)))
    for r in results:
        if r.status not in ("finished", rundir.PREEMPTED):
            print(f"FAILED {r.run_dir}: {r.reason}", file=sys.stderr)
    return results
