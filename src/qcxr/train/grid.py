"""Experiment grids: tasks x heads x seeds, and lists of any other setting.

A grid file (configs/paper.yaml, configs/demo.yaml) is a config file (any Config field, by
nesting) plus two keys:

  experiment: paper           # runs go to runs/<experiment>/<task>/<head>/seed-<k>/
  grid:                       # dotted config keys -> lists of values
    task: [cxr8, cxr14, cxr19]
    model.head: [cdl, dqc]
    train.seed: [0, 1, 2, 3, 4]          # default: train.seeds
    train.learning_rate: [1e-4, 1e-3]    # any other axis makes one experiment per value:
                                         # runs/<experiment>-learning_rate=0.001/...

A task is a built-in label set (qcxr.labels.LABEL_SETS: cxr8, cxr14, cxr19, nih20, cxr26) or the
name of an explicit list given at the top level (configs/labels45.yaml):

  task: my45
  labels: [Atelectasis, Cardiomegaly, ...]

A grid run skips finished runs (status.json) and resumes unfinished ones from their latest
checkpoint. In frozen mode the seeds of one cell train together (vmap).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qcxr import config as config_lib
from qcxr import configs, rundir
from qcxr.config import Config
from qcxr.rundir import RunResult

CELL_AXES = ("task", "model.head")  # these name directories inside an experiment
SEED_AXIS = "train.seed"


@dataclass(frozen=True)
class Grid:
    experiment: str
    base: dict[str, Any]  # config overrides (nested), applied over the paper defaults
    axes: dict[str, list[Any]] = field(default_factory=dict)


def read_grid(source: str | Path | dict[str, Any]) -> Grid:
    """A Grid from a YAML file, a bundled config's name or a mapping; errors name the file and
    key."""
    where = str(source) if not isinstance(source, dict) else "grid"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = configs.path(source)  # a file, or a bundled config's name ("paper")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
    experiment = str(data.pop("experiment", Path(where).stem if where != "grid" else "default"))
    axes = data.pop("grid", {}) or {}
    if not isinstance(axes, dict):
        raise ValueError(f"{where}: 'grid' must map dotted config keys to lists")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in axes.items()}
    try:
        config_lib.from_dict(data)  # unknown keys fail here, with their names
        for key, values in axes.items():
            for value in values:
                config_lib.from_dict(config_lib.merge(data, config_lib.nested(key, value)))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return Grid(experiment, data, axes)


@dataclass(frozen=True)
class Cell:
    """One experiment x task x head: its seeds' configs and run directories."""

    experiment_dir: Path
    configs: list[Config]
    run_dirs: list[Path]


def _suffix(key: str, value: Any) -> str:
    return f"{key.split('.')[-1]}={value}"


def cells(grid: Grid, out_dir: str | Path, overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every cell of the grid, in file order, with run directories under `out_dir`."""
    out_dir = Path(out_dir)
    base = config_lib.merge(grid.base, overrides or {})
    defaults = config_lib.from_dict(base)
    axes = dict(grid.axes)
    seeds = axes.pop(SEED_AXIS, list(defaults.train.seeds))
    cell_axes = {k: axes.pop(k) for k in CELL_AXES if k in axes}
    other = axes
    result = []
    for other_values in itertools.product(*other.values()):
        chosen = dict(zip(other, other_values, strict=True))
        name = "-".join([out_dir.name, *(_suffix(k, v) for k, v in chosen.items())])
        experiment_dir = out_dir.with_name(name)
        for cell_values in itertools.product(*cell_axes.values()):
            settings = base
            for key, value in [*chosen.items(), *zip(cell_axes, cell_values, strict=True)]:
                settings = config_lib.merge(settings, config_lib.nested(key, value))
            configs = [
                config_lib.from_dict(
                    config_lib.merge(settings, config_lib.nested(SEED_AXIS, int(seed)))
                )
                for seed in seeds
            ]
            dirs = [rundir.config_run_path(experiment_dir, c) for c in configs]
            result.append(Cell(experiment_dir, configs, dirs))
    return result


# Called with each run's result as soon as the run is finished or skipped (the caller writes
# what comes after training, such as metrics.json).
AfterRun = Callable[[RunResult], None]


def run_grid(
    config_or_path: str | Path | dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    after_run: AfterRun | None = None,
) -> list[RunResult]:
    """Train every run of a grid (skipping finished ones, resuming the others); their results.

    `out_dir` is the experiment directory (default runs/<experiment>); `overrides` are nested
    config settings applied over the file's (e.g. {"data": {"features": "..."}}).
    """
    from qcxr.train import parallel

    parallel.initialize_distributed()
    grid = read_grid(config_or_path)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / grid.experiment
    data = CellData(progress)
    results: list[RunResult] = []
    for cell in cells(grid, out_dir, overrides):
        done, todo = finished_runs(cell)
        for result in done + train_cell(cell, todo, data, progress):
            if after_run is not None:
                after_run(result)
            results.append(result)
    for r in results:
        if r.status != "finished":
            print(f"FAILED {r.run_dir}: {r.reason}", file=sys.stderr)
    return results


def finished_runs(cell: Cell) -> tuple[list[RunResult], list[tuple[Config, Path]]]:
    """(results of the cell's finished runs, which are skipped; (config, dir) of the others)."""
    done, todo = [], []
    for config, run_dir in zip(cell.configs, cell.run_dirs, strict=True):
        result = rundir.result_of(run_dir) if rundir.is_finished(run_dir) else None
        if result is None:
            todo.append((config, run_dir))
            continue
        print(f"{run_dir}: finished ({result.reason}), skipped", flush=True)
        done.append(result)
    return done, todo


class CellData:
    """The data of the last cell's task, kept while the next cells use the same (one task's
    features or datasets in memory at a time)."""

    def __init__(self, progress: bool):
        self.progress, self.key, self.data = progress, None, None

    def frozen(self, config: Config) -> Any:
        from qcxr.train.data import load_frozen_data

        d = config.data
        key = ("frozen", config.task, config.labels, d.study, d.features, d.source)
        return self._get(key, lambda: load_frozen_data(config))

    def images(self, config: Config, cache: str) -> Any:
        from qcxr.train.data import load_image_data

        key = ("images", config.task, config.labels, config.data.study, config.data.source, cache)
        return self._get(key, lambda: load_image_data(config, cache, self.progress))

    def _get(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key != self.key:
            self.key, self.data = None, None  # free the old data before loading the new
            self.key, self.data = key, load()
        return self.data


def train_cell(
    cell: Cell, todo: list[tuple[Config, Path]], data: CellData, progress: bool
) -> list[RunResult]:
    """Train the unfinished runs of a cell: its seeds together (frozen) or one by one."""
    if not todo:
        return []
    first = todo[0][0]
    if first.train.mode == "frozen":
        from qcxr.train.frozen import train_frozen

        configs, dirs = [c for c, _ in todo], [d for _, d in todo]
        return train_frozen(configs, dirs, data.frozen(first), resume=True, progress=progress)
    from qcxr.train.finetune import train_finetune

    images = data.images(first, first.data.cache or str(cell.experiment_dir / "cache"))
    return [train_finetune(c, d, images, resume=True, progress=progress) for c, d in todo]
