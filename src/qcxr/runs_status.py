"""`qcxr status RUNS_DIR` and `qcxr run GRID --status`: where every run of an experiment stands.

One row per run, read from its directory only (nothing is locked, written or trained):

  state        running      its .lock is held by a live process (a probe flock that fails)
               done         status.json says "finished"
               preempted    status.json says "preempted" (resume with --resume / qcxr run)
               failed       status.json says "failed"; `message` is the first line of its message
               partial      no status.json, but checkpoints/ holds something (resumable)
               not started  none of the above (with a grid file: a run without a directory)
               any other status.json value is shown as it is
  epoch        epochs completed: the last epoch row of history.csv (status.json's "epochs" when
               there is no history); max_epochs from config.yaml (or the grid's config)
  best_val     status.json's best_val_loss for a finished run, else the least val_loss of the
               history's epoch rows (best_epoch with it)
  elapsed_s    the sum of epoch_time over history.csv's epoch rows: the seconds spent training
               and validating the completed epochs, over every session (after a resume the
               resumed epoch counts from the resume). Start-up, data loading, the epoch in
               progress and test predictions are not counted, nor idle time between sessions
               (versions.json records only when each session started, so it cannot give these).
  sessions     the number of sessions in versions.json (1 + the resumes)

A run whose lock holder died is not running: flock is released when its process ends, however it
ends, and the state comes from the files. The probe takes the lock for an instant and releases
it at once. Module of the commands layer: it reads run files through qcxr.rundir and, for a grid
file, lists the runs with qcxr.train.grid.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from qcxr import rundir
from qcxr.config import Config

STATES = ("done", "running", "preempted", "failed", "partial", "not started")
_RUN_FILES = (rundir.CONFIG, rundir.STATUS, rundir.HISTORY, rundir.CHECKPOINTS, rundir.LOCK)


# ------------------------------------------------------------------------------------- rows


def lock_holder(run_dir: str | Path) -> str | None:
    """What the .lock file says of its holder ("pid 12 on host since ...") when a live process
    holds it; None when nobody does (no file, or its holder ended)."""
    path = Path(run_dir) / rundir.LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 1024, 0).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _has_checkpoints(run_dir: Path) -> bool:
    path = run_dir / rundir.CHECKPOINTS
    return path.is_dir() and any(path.iterdir())


def _config_of(run_dir: Path) -> Config | None:
    if not (run_dir / rundir.CONFIG).is_file():
        return None
    try:
        return rundir.read_config(run_dir)
    except Exception:  # an unreadable config.yaml: the row still shows what the files say
        return None


def run_row(run_dir: str | Path, config: Config | None = None) -> dict[str, Any]:
    """The status row of one run directory (it need not exist). `config` (a grid's) names task,
    head, seed and max epochs when the directory has no readable config.yaml."""
    run_dir = Path(run_dir)
    config = _config_of(run_dir) or config
    row: dict[str, Any] = {
        "run_dir": str(run_dir),
        "task": config.task if config else None,
        "head": config.model.head if config else None,
        "seed": config.train.seed if config else None,
        "state": "not started",
        "message": "",
        "epoch": 0,
        "max_epochs": config.train.max_epochs if config else None,
        "best_epoch": None,
        "best_val_loss": None,
        "elapsed_s": 0.0,
        "sessions": 0,
        "holder": None,
    }
    if config is None and rundir.seed_of(run_dir) is not None:  # the grid layout names them
        row["task"], row["head"] = run_dir.parent.parent.name, run_dir.parent.name
        row["seed"] = rundir.seed_of(run_dir)
    if not run_dir.is_dir():
        return row
    status = _read(rundir.read_status, run_dir) or {}
    epochs = _history(run_dir)
    if epochs is not None and len(epochs):
        row["epoch"] = int(epochs["epoch"].iloc[-1])
        row["elapsed_s"] = float(epochs["epoch_time"].fillna(0.0).sum())
        best = epochs["val_loss"].idxmin() if epochs["val_loss"].notna().any() else None
        if best is not None:
            row["best_epoch"] = int(epochs["epoch"][best])
            row["best_val_loss"] = _finite(epochs["val_loss"][best])
    elif status.get("epochs"):
        row["epoch"] = int(status["epochs"])
    if status.get("status") == "finished" and _finite(status.get("best_val_loss")) is not None:
        row["best_val_loss"] = _finite(status["best_val_loss"])
        row["best_epoch"] = status.get("best_epoch", row["best_epoch"])
    versions = _read(rundir.read_versions, run_dir) or {}
    row["sessions"] = len(versions.get("sessions", []))

    holder = lock_holder(run_dir)
    if holder is not None:
        row["state"], row["holder"] = "running", holder
    elif status:
        value = str(status.get("status", "failed"))
        row["state"] = {"finished": "done"}.get(value, value)
        if value != "finished":
            row["message"] = _first_line(status.get("message") or status.get("reason"))
    elif _has_checkpoints(run_dir):
        row["state"] = "partial"
    return row


def _read(reader: Any, run_dir: Path) -> Any:
    try:
        return reader(run_dir)
    except (OSError, ValueError):  # a file being written, or damaged: shown as absent
        return None


def _history(run_dir: Path) -> Any:
    if not (run_dir / rundir.HISTORY).is_file():
        return None
    try:
        return rundir.epoch_rows(run_dir / rundir.HISTORY)
    except Exception:  # empty or half-written: no epochs to show
        return None


# ------------------------------------------------------------------------------------- runs


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return any((path / name).exists() for name in _RUN_FILES)


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Every run directory at or under `runs_dir` (one holding config.yaml, status.json,
    history.csv, checkpoints/ or .lock), sorted; the search does not enter a run directory."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no such directory")
    found = []
    for here, dirs, _files in os.walk(runs_dir):
        if is_run_dir(here):
            found.append(Path(here))
            dirs.clear()
        else:
            dirs.sort()
    return sorted(found, key=_run_key)


def _run_key(path: Path) -> tuple:
    seed = rundir.seed_of(path)
    return (path.parent.parts, seed if seed is not None else -1, path.name)


def status_rows(runs_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of every run under an experiment directory (or a directory of experiments)."""
    return [run_row(d) for d in find_runs(runs_dir)]


def grid_rows(
    grid: str | Path | dict[str, Any],
    out_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """The rows of a grid file's runs, in the grid's order (of one shard's runs with `shard`);
    a run without a directory is "not started"."""
    from qcxr.train.grid import cells, read_grid

    parsed = read_grid(grid)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / parsed.experiment
    grid_cells = cells(parsed, out_dir, overrides)
    if shard is not None:
        from qcxr.train.shard import shard_of

        grid_cells = shard_of(grid_cells, *shard)
    return [
        run_row(d, c)
        for cell in grid_cells
        for c, d in zip(cell.configs, cell.run_dirs, strict=True)
    ]


# ----------------------------------------------------------------------------------- output


def _elapsed(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_table(rows: list[dict[str, Any]], relative_to: str | Path | None = None) -> str:
    """The rows as a text table, then a count per state."""

    def name(row: dict[str, Any]) -> str:
        path = Path(row["run_dir"])
        if relative_to is not None:
            try:
                return str(path.relative_to(relative_to)) or "."
            except ValueError:
                pass
        return str(path)

    header = ("run", "task", "head", "seed", "state", "epoch", "best val", "elapsed", "")
    table = [header]
    for row in rows:
        best = row["best_val_loss"]
        epoch = f"{row['epoch']}/{row['max_epochs'] if row['max_epochs'] is not None else '?'}"
        note = row["message"] or (row["holder"] or "")
        table.append(
            (
                name(row),
                str(row["task"] or "-"),
                str(row["head"] or "-"),
                "-" if row["seed"] is None else str(row["seed"]),
                row["state"],
                epoch,
                "-" if best is None else f"{best:.4f}",
                _elapsed(row["elapsed_s"]) if row["elapsed_s"] else "-",
                note,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    right = {3, 5, 6, 7}
    lines = [
        "  ".join(
            (cell.rjust(w) if i in right else cell.ljust(w))
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in table
    ]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    order = [s for s in STATES if s in counts] + sorted(set(counts) - set(STATES))
    summary = ", ".join(f"{counts[s]} {s}" for s in order)
    total = f"{len(rows)} run{'s' if len(rows) != 1 else ''}"
    lines.append(f"{total}: {summary}" if rows else total)
    return "\n".join(lines)


def print_status(
    rows: list[dict[str, Any]],
    as_json: bool,
    relative_to: str | Path | None = None,
    out: Any = None,
) -> int:
    """Print the table (or the rows as JSON); exit code 0."""
    out = out or sys.stdout
    if as_json:
        print(json.dumps(rows, indent=2), file=out)
    else:
        print(format_table(rows, relative_to), file=out)
    return 0


def status_command(args: argparse.Namespace) -> int:
    return print_status(status_rows(args.runs_dir), args.json, relative_to=args.runs_dir)


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status",
        help="where every run under a directory stands (done, running, failed, ...)",
        description="A table of every run under RUNS_DIR (an experiment directory, a directory "
        "of experiments, or one run): task, head, seed, state (done, running, preempted, failed "
        "with its error's first line, partial, not started), epochs done of the maximum, best "
        "validation loss, and the time spent in its completed epochs. Reads only.",
    )
    status.add_argument("runs_dir", metavar="RUNS_DIR", help="e.g. runs/paper")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.set_defaults(func=status_command)
