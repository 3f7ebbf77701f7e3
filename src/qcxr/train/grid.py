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

With `qcxr run --engine ray` (train/ray_engine.py) each Ray task asks what the top-level
`resources: {cpus: N, gpus: M}` says (defaults: 1 CPU, no GPU).

A grid run skips finished runs (status.json) and resumes unfinished ones from their latest
checkpoint. In frozen mode the seeds of one cell train together (vmap).
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcxr import config as config_lib
from qcxr import configs, rundir
from qcxr.config import Config, ConfigError
from qcxr.rundir import RunResult
from qcxr.train import interrupt

CELL_AXES = ("task", "model.head")  # these name directories inside an experiment
SEED_AXIS = "train.seed"


@dataclass(frozen=True)
class Grid:
    experiment: str
    base: dict[str, Any]  # config overrides (nested), applied over the paper defaults
    axes: dict[str, list[Any]] = field(default_factory=dict)
    # what one Ray task (a frozen-mode cell, or one finetune run) asks of a node: {cpus, gpus}
    resources: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))


DEFAULT_RESOURCES = {"cpus": 1, "gpus": 0}


def _resources(value: Any, where: str) -> dict[str, float]:
    """The grid file's `resources:` ({cpus: N, gpus: M}, both optional) with the defaults."""
    if value is None:
        return dict(DEFAULT_RESOURCES)
    if not isinstance(value, dict):
        raise ConfigError(
            [f"resources: expected a mapping {{cpus: N, gpus: M}}, got {value!r}"], where
        )
    problems = [
        f"resources.{k}: unknown key (known: cpus, gpus)"
        for k in value
        if k not in DEFAULT_RESOURCES
    ]
    out = dict(DEFAULT_RESOURCES)
    for key in DEFAULT_RESOURCES:
        if key not in value:
            continue
        v = value[key]
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0 or (key == "cpus" and v == 0):
            need = "a number > 0" if key == "cpus" else "a number >= 0"
            problems.append(f"resources.{key}: {v!r} is not {need}")
        else:
            out[key] = v
    if problems:
        raise ConfigError(problems, where)
    return out


def read_grid(source: str | Path | dict[str, Any]) -> Grid:
    """A Grid from a YAML file, a bundled config's name or a mapping.

    Every cell's full config is checked here, before anything runs: a `ConfigError` names the
    file and lists every problem once, with the axis values of the cells that have it.
    """
    where = str(source) if not isinstance(source, dict) else "grid"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = configs.path(source)  # a file, or a bundled config's name ("paper")
        data = config_lib.read_yaml(path)  # malformed YAML, a repeated key: one line
    experiment = str(data.pop("experiment", Path(where).stem if where != "grid" else "default"))
    axes = data.pop("grid", {}) or {}
    if not isinstance(axes, dict):
        raise ValueError(f"{where}: 'grid' must map dotted config keys to lists")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in axes.items()}
    resources = _resources(data.pop("resources", None), where)
    grid = Grid(experiment, data, axes, resources)
    try:
        _cell_configs(grid)
    except ConfigError as err:
        raise ConfigError(err.problems, where) from None
    return grid


@dataclass(frozen=True)
class Cell:
    """One experiment x task x head: its seeds' configs and run directories."""

    experiment_dir: Path
    configs: list[Config]
    run_dirs: list[Path]


def _suffix(key: str, value: Any) -> str:
    return f"{key.split('.')[-1]}={value}"


def cells(grid: Grid, out_dir: str | Path, overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every cell of the grid, in file order, with run directories under `out_dir`; every cell's
    config is checked before any is returned (a `ConfigError` lists every problem)."""
    out_dir = Path(out_dir)
    result = []
    for chosen, seed_configs in _cell_configs(grid, overrides):
        name = "-".join([out_dir.name, *(_suffix(k, v) for k, v in chosen.items())])
        experiment_dir = out_dir.with_name(name)
        dirs = [rundir.config_run_path(experiment_dir, c) for c in seed_configs]
        result.append(Cell(experiment_dir, seed_configs, dirs))
    return result


def _cell_configs(
    grid: Grid, overrides: dict[str, Any] | None = None
) -> list[tuple[dict[str, Any], list[Config]]]:
    """(values of the axes beyond CELL_AXES and the seed, the configs of the cell's seeds) of
    every cell, in file order. All are built first; then every problem found is raised once,
    naming the cells that have it."""
    base = config_lib.merge(grid.base, overrides or {})
    problems = {
        f"grid.{key}: [] has no value to run": [] for key, vs in grid.axes.items() if not vs
    }
    axes = {k: v for k, v in grid.axes.items() if v}  # an empty one: its problem above
    seeds = axes.pop(SEED_AXIS, None) or _default_seeds(base)
    cell_axes = {k: axes.pop(k) for k in CELL_AXES if k in axes}
    other = axes
    planned, points = [], []
    for other_values in itertools.product(*other.values()):
        chosen = dict(zip(other, other_values, strict=True))
        for cell_values in itertools.product(*cell_axes.values()):
            at = {**chosen, **dict(zip(cell_axes, cell_values, strict=True))}
            settings = base
            for key, value in at.items():
                settings = config_lib.merge(settings, config_lib.nested(key, value))
            seed_configs = []
            for seed in seeds:
                point = {**at, SEED_AXIS: seed}
                points.append(point)
                try:
                    seed_configs.append(
                        config_lib.from_dict(
                            config_lib.merge(settings, config_lib.nested(SEED_AXIS, seed))
                        )
                    )
                except ConfigError as err:
                    for problem in err.problems:
                        problems.setdefault(problem, []).append(point)
            planned.append((chosen, seed_configs))
    if problems:
        raise ConfigError(
            [problem + _cells_named(failing, points) for problem, failing in problems.items()],
            "grid",
        )
    return planned


def _default_seeds(base: dict[str, Any]) -> list[Any]:
    """The seed axis when the grid has none: train.seeds (its check is each cell's)."""
    train = base.get("train")
    seeds = train.get("seeds") if isinstance(train, dict) else None
    if seeds is None:
        return list(Config().train.seeds)
    return list(seeds) if isinstance(seeds, list | tuple) and seeds else [Config().train.seed]


def _cells_named(failing: list[dict[str, Any]], every: list[dict[str, Any]]) -> str:
    """The failing cells named by their axis values, as " (cells with model.head='dcq')"; ""
    when every cell fails (the problem is the file's, not an axis value's)."""
    if not failing or len(failing) == len(every):
        return ""

    def values(points: list[dict[str, Any]], axis: str) -> list[Any]:
        return list({repr(p[axis]): p[axis] for p in points}.values())

    axes = list(every[0])
    chosen = {a: values(failing, a) for a in axes}
    if math.prod(len(v) for v in chosen.values()) == len({repr(p) for p in failing}):
        # the failing cells are every combination of some axes' values: name those values
        named = [
            f"{a}={v[0]!r}" if len(v) == 1 else f"{a} in [{', '.join(map(repr, v))}]"
            for a, v in chosen.items()
            if len(v) < len(values(every, a))
        ]
        return f" (cells with {', '.join(named)})"
    shown = [", ".join(f"{a}={p[a]!r}" for a in axes) for p in failing[:4]]
    more = f"; and {len(failing) - 4} more" if len(failing) > 4 else ""
    return f" (cells {'; '.join(shown)}{more})"


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
    shard: tuple[int, int] | None = None,
) -> list[RunResult]:
    """Train every run of a grid (skipping finished ones, resuming the others); their results.

    `out_dir` is the experiment directory (default runs/<experiment>); `overrides` are nested
    config settings applied over the file's (e.g. {"data": {"features": "..."}}); `shard`
    (I, N) trains only the I-th of N disjoint slices of the runs (train.shard.shard_of).
    """
    from qcxr.train import parallel

    parallel.initialize_distributed()
    _, _, grid_cells = planned_cells(config_or_path, out_dir, overrides, shard)
    data = CellData(progress)
    results: list[RunResult] = []
    with interrupt.handling():  # one signal stops the grid, not only the run it lands in
        for cell in grid_cells:
            done, todo = finished_runs(cell)
            for result in done + train_cell(cell, todo, data, progress):
                if after_run is not None:
                    after_run(result)
                results.append(result)
            if interrupt.requested():
                print(
                    f"stopped by {interrupt.requested()}: runs not yet trained are left for the "
                    "next `qcxr run`",
                    file=sys.stderr,
                )
                break
    for r in results:
        if r.status not in ("finished", rundir.PREEMPTED):
            print(f"FAILED {r.run_dir}: {r.reason}", file=sys.stderr)
    return results


def planned_cells(
    config_or_path: str | Path | dict[str, Any],
    out_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[Grid, Path, list[Cell]]:
    """(the grid, its experiment directory, the cells to train: all, or --shard's slice)."""
    grid = read_grid(config_or_path)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / grid.experiment
    grid_cells = cells(grid, out_dir, overrides)
    if shard is not None:
        from qcxr.train.shard import shard_of

        grid_cells = shard_of(grid_cells, *shard)
    return grid, out_dir, grid_cells


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

        # every data setting (format, table, label policies, splits) decides what is loaded
        key = ("frozen", config.task, config.labels, repr(config.data),
               config.train.require_external_test, config.train.standardize_features)  # fmt: skip
        return self._get(key, lambda: load_frozen_data(config))

    def images(self, config: Config, cache: str) -> Any:
        from qcxr.train.data import load_image_data

        key = ("images", config.task, config.labels, repr(config.data), cache)
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
    results = []
    for config, run_dir in todo:
        if interrupt.requested():
            break
        results.append(train_finetune(config, run_dir, images, resume=True, progress=progress))
    return results
