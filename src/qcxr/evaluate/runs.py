"""An experiment's runs as the report reads them, and the evaluation settings they share.

A run is a directory `rundir.run_path(experiment, task, head, seed)` (the layout is
`qcxr.rundir`'s); `scan` reads its config.yaml, versions.json, history.csv and metrics.json,
computing metrics.json from the predictions when it is missing or older than they are. Every
run's predictions are checked either way (`predictions.check_run`: probabilities in [0, 1], unique
ids, ids and truth of the test set's label file when the run names a study), so a report is
never drawn from a bad file; the error names the file, inside its run directory.

The report's settings are the `eval:` section of the runs' config.yaml (config.EvalConfig):
every run of an experiment must have the same one, so that the F1 threshold and the
head/medium/tail boundaries its metrics were computed with, the significance level `alpha`
and the bootstrap count are one set; an explicit bootstrap count or alpha overrides the runs'.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.config import Config, EvalConfig
from qcxr.evaluate import metrics as M
from qcxr.evaluate.predictions import check_run


@dataclass
class Run:
    task: str
    head: str
    seed: int
    path: Path
    config: Config | None = None  # config.yaml (None: the run directory has none)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)  # versions.json
    history: pd.DataFrame | None = None  # history.csv (rundir.read_history)
    # a grid's other axes, from the cell directory's name (<experiment>-loss=focal: {"loss":
    # "focal"}); {} for a plain experiment
    axes: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """<task>/<head>/<seed dir> as the run lies in the experiment, after its grid cell's
        axis values ("loss=focal/cxr8/cdl/seed-0")."""
        return "/".join([*(f"{k}={v}" for k, v in self.axes.items()), *self.path.parts[-3:]])

    @property
    def predictions(self) -> dict[str, Path]:
        return {rundir.testset_of(p): p for p in rundir.prediction_files(self.path)}

    @property
    def settings(self) -> dict[str, Any]:
        """config.yaml as a plain nested dict ({} without one)."""
        return config_lib.to_dict(self.config) if self.config is not None else {}


def _weights_identities(value: Any, key: str = "") -> list[str]:
    """Every string under a key containing 'weights' anywhere in a nested config."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _weights_identities(v, str(k))]
    if isinstance(value, list):
        return [s for v in value for s in _weights_identities(v, key)]
    return [value] if isinstance(value, str) and "weights" in key.lower() else []


def weights_of(run: Run) -> list[str]:
    """Backbone weight identities named by the run's config.yaml and versions.json."""
    found = _weights_identities(run.settings) + _weights_identities(run.versions)
    return [w for w in dict.fromkeys(found) if w]


def random_weights(run: Run) -> bool:
    """True when the run's backbone was not pretrained: a weights field says "random"."""
    return any("random" in w.lower() for w in weights_of(run))


def _as_run(runs_dir: Path, path: Path, axes: dict[str, str]) -> Run | None:
    """The run at `path` when it is a run directory of `runs_dir`'s layout, else None."""
    seed = rundir.seed_of(path)
    if seed is None or not path.is_dir() or path.parts[-3] == "summary":
        return None
    task, head = path.parts[-3], path.parts[-2]
    if rundir.run_path(runs_dir, task, head, seed) != path:
        return None
    return Run(task=task, head=head.lower(), seed=seed, path=path, axes=dict(axes))


# A grid axis beyond task, head and seed puts each value's runs in a sibling directory,
# <experiment>-<key>=<value>[-<key>=<value>...] (train.grid.cells): one "-key=" per axis.
_AXIS_SPLIT = re.compile(r"-(?=[A-Za-z_][\w.]*=)")


def cell_axes(experiment_dir: Path, name: str) -> dict[str, str] | None:
    """{axis: value} of a grid cell directory `name` beside `experiment_dir` (train.grid's
    naming: <experiment>-<key>=<value>...), None when `name` is not one of its cells."""
    prefix = experiment_dir.name + "-"
    if not name.startswith(prefix):
        return None
    parts = _AXIS_SPLIT.split("-" + name[len(prefix) :])[1:]
    pairs = [part.partition("=") for part in parts]
    if not pairs or any(not key or not sep for key, sep, _ in pairs):
        return None
    return {key: value for key, _, value in pairs}


def experiment_cells(runs_dir: Path) -> list[tuple[Path, dict[str, str]]]:
    """(directory, grid axes) of every cell of the experiment: `runs_dir` itself when it holds
    runs, else the sibling cells a grid with other axes wrote (train.grid.cells)."""
    if runs_dir.is_dir() and any(_run_dirs(runs_dir)):
        return [(runs_dir, {})]
    siblings = sorted(runs_dir.parent.glob(glob.escape(runs_dir.name) + "-*"))
    found = [(d, cell_axes(runs_dir, d.name)) for d in siblings if d.is_dir()]
    return [(d, axes) for d, axes in found if axes is not None]


def _run_dirs(experiment_dir: Path) -> list[Path]:
    return sorted(experiment_dir.glob("*/*/seed-*"))


def _read(run: Run, recompute: bool) -> Run:
    """Fill `run` from its files; metrics.json is (re)computed when missing, stale or asked."""
    path = run.path
    run.config = M.run_config(path)
    run.versions = rundir.read_versions(path) or {}
    if (path / rundir.HISTORY).is_file():
        run.history = rundir.read_history(path)
    metrics_path = path / rundir.METRICS
    stale = metrics_path.is_file() and any(
        p.stat().st_mtime > metrics_path.stat().st_mtime for p in run.predictions.values()
    )
    if run.predictions and (recompute or stale or not metrics_path.is_file()):
        M.write_metrics(path)  # with the run's own eval: settings; checks the predictions
    elif run.predictions:
        check_run(path, run.config)  # metrics.json is current: its predictions still sound
    if metrics_path.is_file():
        run.metrics = M.read_metrics(path)
    return run


def scan(runs_dir: str | Path, *, recompute: bool = False) -> list[Run]:
    """Every <task>/<head>/seed-<k>/ run under `runs_dir`, with config, metrics and history;
    for a grid with other axes, every run of its cells <runs_dir>-<key>=<value>/ (`axes`)."""
    runs_dir = Path(runs_dir)
    cells = experiment_cells(runs_dir)
    if not runs_dir.is_dir() and not cells:
        raise FileNotFoundError(
            f"{runs_dir}: runs directory not found (nor grid cells {runs_dir.name}-<key>=<value>/)"
        )
    found = (_as_run(d, path, axes) for d, axes in cells for path in _run_dirs(d))
    runs = [_read(run, recompute) for run in found if run is not None]
    if not runs:
        raise FileNotFoundError(f"{runs_dir}: no run directories <task>/<head>/seed-<k>/ found")
    return runs


def axis_names(runs: list[Run]) -> list[str]:
    """The grid axes beyond task, head and seed that the runs vary over, in first-seen order."""
    return list(dict.fromkeys(k for r in runs for k in r.axes))


@dataclass(frozen=True)
class ReportSettings:
    """The evaluation settings a report used and where they came from."""

    eval: EvalConfig
    source: str  # "config.yaml" (the runs'), "default" (no run has one), plus overrides

    def describe(self) -> str:
        e = self.eval
        return (
            f"alpha = {e.alpha:g} ({100 * (1 - e.alpha):g}% bootstrap intervals, volcano line "
            f"at p = {e.alpha:g}), bootstrap = {e.bootstrap} resamples, F1 threshold = "
            f"{e.f1_threshold:g}, head > {e.head_min_count} and tail < {e.tail_max_count} "
            f"training images; from {self.source}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.eval), "source": self.source}


def experiment_eval(
    runs: list[Run], *, resamples: int | None = None, alpha: float | None = None
) -> ReportSettings:
    """The runs' common `eval:` settings, with `resamples` (bootstrap) and `alpha` overriding.

    A run without config.yaml counts with the paper's defaults. Runs that disagree on a setting
    not overridden are an error naming two of them and the settings they differ in.
    """
    overrides = {k: v for k, v in (("bootstrap", resamples), ("alpha", alpha)) if v is not None}
    first, (base, source) = runs[0], M.eval_of(runs[0].config)
    for run in runs[1:]:
        other, other_source = M.eval_of(run.config)
        changed = config_lib.changed_settings(
            dataclasses.asdict(base), dataclasses.asdict(other), set(overrides)
        )
        if changed:
            raise ValueError(
                f"runs disagree on their eval: settings: {first.path} ({source}) and "
                f"{run.path} ({other_source}): "
                + config_lib.describe_changes({f"eval.{k}": v for k, v in changed.items()})
                + "; evaluate one experiment's runs with one eval: section"
            )
    if any(run.config is not None for run in runs):
        source = f"the runs' {rundir.CONFIG}"
    if overrides:
        source += "; given: " + ", ".join(f"{k} = {v}" for k, v in overrides.items())
    return ReportSettings(dataclasses.replace(base, **overrides), source)
