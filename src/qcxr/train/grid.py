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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qcxr import config as config_lib
from qcxr.config import Config

CELL_AXES = ("task", "model.head")  # these name directories inside an experiment
SEED_AXIS = "train.seed"


@dataclass(frozen=True)
class Grid:
    experiment: str
    base: dict[str, Any]  # config overrides (nested), applied over the paper defaults
    axes: dict[str, list[Any]] = field(default_factory=dict)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_grid(source: str | Path | dict[str, Any]) -> Grid:
    """A Grid from a YAML file or mapping; errors name the file and key."""
    where = str(source) if not isinstance(source, dict) else "grid"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: grid config not found")
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
                config_lib.from_dict(_merge(data, _nested(key, value)))
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
    base = _merge(grid.base, overrides or {})
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
                settings = _merge(settings, _nested(key, value))
            configs = [
                config_lib.from_dict(_merge(settings, _nested(SEED_AXIS, int(seed))))
                for seed in seeds
            ]
            head = configs[0]
            cell_dir = experiment_dir / head.task / head.model.head
            dirs = [cell_dir / f"seed-{c.train.seed}" for c in configs]
            result.append(Cell(experiment_dir, configs, dirs))
    return result


def run_grid(
    config_or_path: str | Path | dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[Any]:
    """Train every run of a grid (skipping finished ones, resuming the others); their results.

    `out_dir` is the experiment directory (default runs/<experiment>); `overrides` are nested
    config settings applied over the file's (e.g. {"data": {"features": "..."}}).
    """
    from qcxr.train import parallel
    from qcxr.train.loop import RunResult, is_finished, run_status, train_finetune, train_frozen

    parallel.initialize_distributed()
    grid = read_grid(config_or_path)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / grid.experiment
    results: list[RunResult] = []
    frozen_data: dict[tuple, Any] = {}
    image_data: dict[tuple, Any] = {}
    for cell in cells(grid, out_dir, overrides):
        todo = [(c, d) for c, d in zip(cell.configs, cell.run_dirs, strict=True)]
        for _, run_dir in todo:
            if is_finished(run_dir):
                status = run_status(run_dir)
                print(f"{run_dir}: finished ({status.get('reason')}), skipped", flush=True)
                results.append(
                    RunResult(
                        run_dir,
                        "finished",
                        status.get("reason", ""),
                        status.get("best_epoch", 0),
                        status.get("best_val_loss", float("nan")),
                        status.get("epochs", 0),
                    )
                )
        todo = [(c, d) for c, d in todo if not is_finished(d)]
        if not todo:
            continue
        first = todo[0][0]
        if first.train.mode == "frozen":
            from qcxr.train.data import load_frozen_data

            key = (
                first.task,
                first.labels,
                first.data.study,
                first.data.features,
                first.data.source,
            )
            if key not in frozen_data:
                frozen_data.clear()  # one task's features in memory at a time
                frozen_data[key] = load_frozen_data(first)
            results += train_frozen(
                [c for c, _ in todo],
                [d for _, d in todo],
                frozen_data[key],
                resume=True,
                progress=progress,
            )
            continue
        from qcxr.train.loop import load_image_data

        cache = first.data.cache or str(cell.experiment_dir / "cache")
        key = (first.task, first.labels, first.data.study, first.data.source, cache)
        if key not in image_data:
            image_data.clear()
            image_data[key] = load_image_data(first, cache, progress)
        for config, run_dir in todo:
            results.append(
                train_finetune(config, run_dir, image_data[key], resume=True, progress=progress)
            )
    failed = [r for r in results if r.status != "finished"]
    for r in failed:
        print(f"FAILED {r.run_dir}: {r.reason}", file=sys.stderr)
    return results
