"""Running the Table III cells: one worker process per cell (or per framework), watched.

Each framework runs in its own process, started under the framework's own interpreter when one
is given: PennyLane dropped TensorFlow after v0.43, so `pennylane-tf` may need an environment of
its own, as the paper's authors kept one per framework. A worker past the time or memory limit is
killed with every process it started, and its cells are recorded with status "timeout" or
"memory". Cells already measured in the output directory are reused (`cells.reusable`), so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcxr.bench.cells import REUSE, Cell, Plan, read_cell, reusable, write_cell
from qcxr.bench.frameworks import FRAMEWORKS
from qcxr.bench.machine import kill_tree, tree_rss_gib

ISOLATE = ("cell", "framework")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def python_option(framework: str) -> str:
    """The attribute (and, dashed, the flag) naming a framework's interpreter."""
    return "python_" + framework.replace("-", "_")


def env_python(framework: str) -> str:
    """The environment variable naming a framework's interpreter."""
    return "QCXR_PYTHON_" + framework.replace("-", "_").upper()


@dataclass(frozen=True)
class RunOptions:
    """How the cells of a plan are run: where, which to keep, limits, interpreters."""

    out: Path
    reuse: str = "same"
    isolate: str = "cell"
    timeout: float | None = None  # seconds per worker process
    max_rss_gib: float | None = None  # resident memory of a worker and its children
    pythons: Mapping[str, str | None] = field(default_factory=dict)  # framework -> interpreter

    def __post_init__(self) -> None:
        if self.reuse not in REUSE:
            raise ValueError(f"--reuse {self.reuse!r}: expected one of {REUSE}")
        if self.isolate not in ISOLATE:
            raise ValueError(f"--isolate {self.isolate!r}: expected one of {ISOLATE}")

    @property
    def cells_dir(self) -> Path:
        return self.out / "cells"

    def python(self, framework: str) -> str:
        """The interpreter given for `framework`, else $QCXR_PYTHON_<FRAMEWORK>, else this one."""
        chosen = self.pythons.get(framework) or os.environ.get(env_python(framework))
        return chosen or sys.executable


def worker_env() -> dict[str, str]:
    """This checkout's sources first on the path, so another interpreter finds the workers."""
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def worker_command(python: str, framework: str, *extra: str) -> list[str]:
    return [python, "-m", "qcxr.bench.frameworks.worker", "--framework", framework, *extra]


def probe(framework: str, python: str) -> dict[str, Any]:
    """Availability and versions of `framework` under `python`; never raises."""
    try:
        done = subprocess.run(
            worker_command(python, framework, "--probe"),
            capture_output=True,
            text=True,
            env=worker_env(),
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"installed": False, "missing": [f"interpreter {python}: {err}"]}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"installed": False, "missing": [f"interpreter {python}: {tail[0]}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def supports_tensorflow(pennylane_version: str | None) -> bool:
    """PennyLane deprecated TensorFlow in 0.42 and dropped it after 0.43."""
    try:
        major, minor = (int(part) for part in (pennylane_version or "").split(".")[:2])
    except ValueError:
        return True  # unknown: let the cell show what happens
    return (major, minor) <= (0, 43)


def cell_path(plan: Plan, cells_dir: Path, framework: str, head: str, num_labels: int) -> Path:
    return cells_dir / f"{plan.name(framework, head, num_labels)}.json"


def failed_cell(
    framework: str, head: str, n: int, plan: Plan, python: str, status: str, reason: str
) -> Cell:
    """The record of a cell that has no time."""
    settings = plan.settings(framework, head, n)
    return Cell(**settings, python=python, status=status, reason=reason)


def measure_framework(framework: str, plan: Plan, options: RunOptions) -> None:
    """Run the missing cells of one framework; a framework that is not installed is skipped."""
    python, cells_dir = options.python(framework), options.cells_dir
    found = {
        (head, n): read_cell(cell_path(plan, cells_dir, framework, head, n))
        for _, head, n in plan.cells((framework,))
    }
    todo = [key for key, cell in found.items() if not reusable(cell, plan, options.reuse)]
    if not todo:
        log(f"{framework}: all cells already measured in {cells_dir}")
        return
    found = probe(framework, python)
    if not found["installed"]:
        missing = "; ".join(found["missing"])
        log(
            f"{framework}: skipped, not installed ({missing}); install the extra "
            f"(pip install 'qcxr[bench]') or pass --{python_option(framework).replace('_', '-')} "
            "PYTHON"
        )
        for head, n in todo:
            skipped = failed_cell(
                framework, head, n, plan, python, "skipped", f"not installed: {missing}"
            )
            write_cell(cell_path(plan, cells_dir, framework, head, n), skipped)
        return
    if framework == "pennylane-tf" and not supports_tensorflow(found["versions"].get("pennylane")):
        log(
            f"{framework}: warning: PennyLane {found['versions']['pennylane']} is past the last "
            "release with TensorFlow support (0.43); its broadcast circuits fail from 13 wires. "
            "Pass --python-pennylane-tf with an environment that has pennylane<=0.43."
        )
    groups = [[cell] for cell in todo] if options.isolate == "cell" else [todo]
    for group in groups:
        run_worker(framework, python, group, plan, options)


def worker_arguments(framework: str, cells: list[tuple[str, int]], plan: Plan, out: Path):
    options = [("--option", f"{k}={v}") for k, v in plan.options(framework).items()]
    return [
        "--cells", *(f"{h}:{n}" for h, n in cells),
        "--batch", str(plan.batch), "--backbone", plan.backbone,
        "--warmup", str(plan.warmup), "--steps", str(plan.steps),
        "--out", str(out), *(part for option in options for part in option),
    ]  # fmt: skip


def run_worker(
    framework: str, python: str, cells: list[tuple[str, int]], plan: Plan, options: RunOptions
) -> None:
    """Measure `cells` in one worker; a cell it left without a result is recorded as failed."""
    cells_dir = options.cells_dir
    paths = [cell_path(plan, cells_dir, framework, h, n) for h, n in cells]
    log(f"{framework}: measuring {', '.join(p.stem for p in paths)} with {python}")
    for path in paths:  # a stale result must not pass for this run's
        path.unlink(missing_ok=True)
    logs = cells_dir.parent / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{paths[0].stem}.log", "w") as log_file:
        process = subprocess.Popen(
            worker_command(python, framework, *worker_arguments(framework, cells, plan, cells_dir)),
            stdout=log_file,
            stderr=log_file,
            env=worker_env(),
        )
        try:
            verdict, elapsed = watch(process, options.timeout, options.max_rss_gib)
        finally:  # interrupted harness: leave no worker behind
            if process.poll() is None:
                kill_tree(process)
    for (head, n), path in zip(cells, paths, strict=True):
        if not path.exists():  # killed, or crashed before writing its result
            status, reason = verdict or ("error", f"worker died: {logs}")
            write_cell(path, failed_cell(framework, head, n, plan, python, status, reason))
        log(f"  {path.stem}: {read_cell(path).status} ({elapsed:.1f} s)")


def watch(
    process: subprocess.Popen, timeout: float | None, max_rss_gib: float | None
) -> tuple[tuple[str, str] | None, float]:
    """Wait for a worker, killing it past the time or memory limit: ((status, reason) or None,
    seconds).

    The memory limit protects a shared machine: PennyLane's backprop at n = 19 holds every
    intermediate state (about 11 GB in JAX, twice that in complex128 frameworks). It counts the
    worker and every process it started (an interpreter may be a wrapper that starts another).
    """
    start = time.perf_counter()
    while process.poll() is None:
        elapsed = time.perf_counter() - start
        verdict = None
        if timeout is not None and elapsed > timeout:
            verdict = ("timeout", f"killed after {timeout:g} s")
        elif max_rss_gib is not None and tree_rss_gib(process.pid) > max_rss_gib:
            verdict = ("memory", f"killed above {max_rss_gib:g} GiB RSS")
        if verdict:
            kill_tree(process)
            return verdict, elapsed
        time.sleep(0.2)
    return None, time.perf_counter() - start


def collect(plan: Plan, cells_dir: Path) -> list[Cell]:
    """Results of the requested grid, in table order; cells never measured are left out."""
    found = (
        read_cell(cell_path(plan, cells_dir, framework, head, n))
        for framework, head, n in plan.cells(tuple(FRAMEWORKS))
    )
    return [cell for cell in found if cell is not None]
