"""`qcxr report RUNS_DIR`: every run of an experiment -> tables, figures and one report.html.

Reads runs/<experiment>/<task>/<head>/seed-<k>/ (the run directory layout of `qcxr.rundir`:
config.yaml, versions.json, history.csv, metrics.json, predictions-<testset>.parquet;
metrics.json is computed from the predictions when missing) and writes runs/<experiment>/summary/:

  auroc.csv      one row per (task, testset, head, seed, label) with auroc, ap, f1 ("mean" rows)
  groups.csv     head/medium/tail means per run, with the number of labels each covers
  stats.csv      CDL vs DQC per (task, testset, label): means, stds, seeds, % diff, t, p, marks,
                 Holm
  summary.csv    the mean-AUROC rows of stats.csv as printed (mean +- std, or one seed's value,
                 % diff, p, mark, seeds CDL/DQC)
  bootstrap.csv  bootstrap CIs of each head's seed-mean AUROC and of the CDL - DQC difference
  loss.csv       the numbers behind the loss curves
  runs.csv       one row per run: path, backbone weights, circuit backend and training source
                 as resolved (versions.json), epochs, best validation loss
  benchmark.csv  Table III numbers, when a benchmark CSV was found
  figures/*.png|svg and report.html (figures embedded as base64 PNG; a table embedded when
                 small, else linked as its CSV beside the page: `report_html`)

A grid with another axis (train.loss: [bce, focal]) writes its cells beside the experiment, as
<experiment>-loss=bce/ ... (train.grid.cells); `qcxr report <experiment>` reads them all as one
experiment and every table gains the axis as a column (`runs.experiment_cells`).

The page says what it ran on and how to read it (`report_text`): the data (a synthetic study,
by its marker, or real label files, with their sha256), label set and backbone weights; the
seeds that ran; what each column means (eq. 4's symmetric % difference, which p each mark
uses: Holm-adjusted in the per-label figures, unadjusted in the mean figure and the volcano);
labels whose AUROC is below chance; and what one seed cannot show (no std, no t-test, no
volcano). When a run recorded an MLflow run (tracking.json), the report is attached to it
(`qcxr.train.tracking.log_report`).

The significance level (bootstrap intervals, the volcano plot's line) and the bootstrap count
are the runs' `eval:` settings (`runs.experiment_eval`); the report states the ones it used.
history.csv is read by `rundir.read_history` (columns epoch, step, train_loss, val_loss, ...).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from qcxr.config import EvalConfig
from qcxr.evaluate import plots as P
from qcxr.evaluate import report_text as T
from qcxr.evaluate import stats as S
from qcxr.evaluate.diagnosis import diagnose_run, message
from qcxr.evaluate.predictions import read_predictions
from qcxr.evaluate.report_html import Figures, Tables, page
from qcxr.evaluate.runs import (
    Run,
    axis_names,
    experiment_eval,
    random_weights,
    scan,
    weights_of,
)
from qcxr.labels import CXR8, CXR14


def groups_table(runs: list[Run]) -> pd.DataFrame:
    """Head/medium/tail means of every run and test set, with the labels each covers."""
    rows = []
    for run in runs:
        for testset, m in run.metrics.get("testsets", {}).items():
            for group, g in m.get("groups", {}).items():
                rows.append(
                    {
                        "task": run.task,
                        "testset": testset,
                        "head": run.head,
                        "seed": run.seed,
                        **run.axes,
                        "group": group,
                        "auroc": g.get("auroc"),
                        "ap": g.get("ap"),
                        "f1": g.get("f1"),
                        "n_labels": (g.get("n_labels") or {}).get("auroc"),
                        "labels": "; ".join(g.get("labels", [])),
                    }
                )
    return pd.DataFrame(rows)


def runs_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        h = run.history
        val = h["val_loss"].dropna() if h is not None else pd.Series(dtype=float)
        resolved = run.versions.get("resolved") or {}
        rows.append(
            {
                "task": run.task,
                "head": run.head,
                "seed": run.seed,
                **run.axes,
                "path": str(run.path),
                "weights": "; ".join(weights_of(run)) or "unknown",
                "random_weights": random_weights(run),
                "backend": resolved.get("model.backend"),
                "source": resolved.get("data.source"),
                "epochs": int(h["epoch"].max()) if h is not None and len(h) else None,
                "best_val_loss": float(val.min()) if len(val) else None,
                "testsets": ", ".join(sorted(run.predictions)),
                "metrics": bool(run.metrics),
            }
        )
    return pd.DataFrame(rows)


def bootstrap_table(
    runs: list[Run], resamples: int, progress: bool = False, *, alpha: float = EvalConfig.alpha
) -> pd.DataFrame:
    """Bootstrap CIs (central 1 - alpha) for every (task, testset, grid axis values), from the
    runs' predictions."""
    frames = []
    keys = sorted({(r.task, t, tuple(r.axes.items())) for r in runs for t in r.predictions})
    for task, testset, axes in keys:
        by_head: dict[str, list] = {}
        labels = None
        for run in sorted(runs, key=lambda r: (r.head, r.seed)):
            if (run.task, tuple(run.axes.items())) != (
                task,
                axes,
            ) or testset not in run.predictions:
                continue
            ids, names, probs, truth = read_predictions(run.predictions[testset])
            if labels is not None and names != labels:
                raise ValueError(f"{run.predictions[testset]}: labels differ from other seeds'")
            labels = names
            by_head.setdefault(run.head, []).append((ids, probs, truth))
        where = "/".join([task, testset, *(f"{k}={v}" for k, v in axes)])
        out = S.bootstrap_auroc(
            by_head, labels, resamples=resamples, alpha=alpha, where=where, progress=progress
        )
        frames.append(out.assign(task=task, testset=testset, **dict(axes)))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    front = ["task", "testset", *axis_names(runs)]
    return table[[*front, "head", "label", "estimate", "lo", "hi", "resamples"]]


def find_benchmark(runs_dir: Path) -> Path | None:
    """A Table III CSV beside the runs: benchmark*.csv, or bench/summary-*.csv (`qcxr bench`)."""
    found = sorted(runs_dir.glob("benchmark*.csv")) + sorted(runs_dir.glob("bench/summary-*.csv"))
    return found[0] if found else None


def learned_nothing(runs: list[Run]) -> dict[str, str]:
    """Run name -> the "learned nothing" line, for each run whose diagnosis says so (metrics.json's,
    or computed here for a metrics.json written before diagnoses were)."""
    out = {}
    for run in runs:
        if not run.metrics:
            continue
        diagnosis = run.metrics.get("diagnosis")
        if diagnosis is None:
            diagnosis = diagnose_run(run.path, run.metrics, run.config)
        said = message(diagnosis)
        if said:
            out[run.name] = said
    return out


def single_class_notes(runs: list[Run]) -> list[str]:
    """One note per task/test set naming the labels with a single class (NaN AUROC and AP)."""
    single: dict[str, set[str]] = {}
    for r in runs:
        for testset, m in r.metrics.get("testsets", {}).items():
            nan_labels = [k for k, v in m["labels"].items() if not math.isfinite(v["auroc"])]
            single.setdefault(f"{r.task}/{testset}", set()).update(
                m.get("single_class", nan_labels)
            )
    return [
        f"{where}: single class in the test set, AUROC/AP NaN and left out of means: "
        + ", ".join(sorted(names))
        for where, names in sorted(single.items())
        if names
    ]


def metric_tables(
    runs_dir: Path, runs: list[Run], settings: EvalConfig, progress: bool
) -> tuple[Tables, pd.DataFrame]:
    """The tables of the runs' metrics and statistics (all but loss and benchmark), and the
    CDL vs DQC comparison the figures draw; a grid's other axes are columns of each."""
    by = axis_names(runs)
    auroc = S.long_table(
        {"task": r.task, "head": r.head, "seed": r.seed, "metrics": r.metrics, "axes": r.axes}
        for r in runs
        if r.metrics
    )
    if auroc.empty:
        raise FileNotFoundError(f"{runs_dir}: no run has metrics.json or predictions to evaluate")
    compared = S.compare(auroc, by=by)
    tables: Tables = {
        "auroc": ("auroc.csv", auroc),
        "stats": ("stats.csv", compared),
        "summary": ("summary.csv", pd.DataFrame(S.summary_table(compared, by=by))),
        "groups": ("groups.csv", groups_table(runs)),
        "runs": ("runs.csv", runs_table(runs)),
    }
    if settings.bootstrap > 0:
        boot = bootstrap_table(runs, settings.bootstrap, progress, alpha=settings.alpha)
        tables["bootstrap"] = ("bootstrap.csv", boot)
    return tables, compared


def _cell_name(task: str, axes: tuple[tuple[str, str], ...]) -> str:
    return "-".join([task, *(f"{k}={v}" for k, v in axes)])


def loss_figures(runs: list[Run], fig_dir: Path) -> tuple[pd.DataFrame | None, Figures, list[str]]:
    """Fig. 4 per task (and grid axis values) from the runs' histories: (loss table, figures,
    notes)."""
    frames, figures, notes = [], [], []
    for task, axes in sorted({(r.task, tuple(r.axes.items())) for r in runs}):
        histories: dict[str, list[pd.DataFrame]] = {}
        for r in runs:
            if (r.task, tuple(r.axes.items())) == (task, axes) and r.history is not None:
                histories.setdefault(r.head, []).append(r.history)
        name = _cell_name(task, axes)
        if not histories:
            notes.append(f"{name}: no history.csv found, no loss curves")
            continue
        table = P.loss_table(histories)
        frames.append(table.assign(task=task, **dict(axes)))
        title = f"{name.upper() if not axes else task.upper() + ', ' + name[len(task) + 1 :]}: loss"
        paths = P.loss_curves(table, fig_dir / f"loss-{name}", title=title)
        figures.append((paths[0], f"Fig. 4: training and validation loss, {title[:-6]}"))
    return (pd.concat(frames, ignore_index=True) if frames else None), figures, notes


def _range_text(limits: tuple[float, float]) -> str:
    return f"AUROC axis {limits[0]:.2f} to {limits[1]:.2f}"


def label_figures(compared: pd.DataFrame, fig_dir: Path, by: list[str]) -> Figures:
    """Figs. 6-11, one per task, test set and grid axis values; the test sets of a task share
    one AUROC axis range (NIH and MIMIC panels compare at a glance) that holds every error bar."""
    figures = []
    per_label = compared[compared["label"] != S.MEAN]
    for task, of_task in per_label.groupby("task", sort=True):
        limits = P.auroc_limits(of_task)
        for values, _ in of_task.groupby(["testset", *by], sort=True):
            testset, *axis_values = values
            where = dict(zip(by, axis_values, strict=True))
            stem = "-".join(["auroc", task, testset, *(f"{k}={v}" for k, v in where.items())])
            paths = P.label_auroc_bars(compared, task, testset, fig_dir / stem, limits=limits,
                                       where=where)  # fmt: skip
            said = "".join(f", {k}={v}" for k, v in where.items())
            figures.append((paths[0], f"Figs. 6-11: per-label AUROC, {task.upper()}, {testset}"
                            f"{said}; marks: Holm-adjusted p; {_range_text(limits)}, shared by "
                            f"every test set of {task.upper()}"))  # fmt: skip
    return figures


def auroc_figures(
    compared: pd.DataFrame, fig_dir: Path, alpha: float, by: list[str]
) -> tuple[Figures, list[str]]:
    """Figs. 5-13: mean and per-label AUROC bars, volcano plots (line at p = alpha); and notes
    on the volcano plots left out (no p-value to plot)."""
    paths = P.mean_auroc_bars(compared, fig_dir / "mean-auroc", by=by)
    figures = [(paths[0], "Fig. 5: mean AUROC, CDL vs DQC, mean ± std over seeds; marks: "
                "unadjusted p of one paired t-test per pair")]  # fmt: skip
    figures += label_figures(compared, fig_dir, by)
    notes = []
    tested = compared[compared["p"].astype(float).map(math.isfinite)]
    present = set(compared["label"])
    for name, labels, caption in (
        ("volcano-cxr8", list(CXR8), "Fig. 12: volcano plot, CXR-8 labels"),
        ("volcano-cxr14", [x for x in CXR14 if x not in CXR8], "Fig. 13: CXR-14 added labels"),
    ):
        if not present & set(labels):
            continue
        if not set(tested["label"]) & set(labels):
            notes.append(f"{caption}: not drawn, no label has a p-value (the paired t-test needs "
                         "at least two seeds of both CDL and DQC)")  # fmt: skip
            continue
        paths = P.volcano(compared, labels, fig_dir / name, title=caption, alpha=alpha)
        figures.append((paths[0], f"{caption}; y: unadjusted p, dashed line p = {alpha:g}"))
    return figures, notes


def benchmark_figure(bench_path: Path, fig_dir: Path) -> tuple[tuple[str, pd.DataFrame], Figures]:
    """(("benchmark.csv", Table III), its figure) from a benchmark CSV."""
    bench = P.read_benchmark(bench_path)
    paths = P.benchmark_bars(bench, fig_dir / "benchmark")
    return ("benchmark.csv", bench), [(paths[0], f"Table III as bars, from {bench_path}")]


def write_report(
    runs_dir: str | Path,
    *,
    resamples: int | None = None,
    alpha: float | None = None,
    benchmark: str | Path | None = None,
    recompute: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write summary/ (CSV tables, figures, report.html) for an experiment; returns an index.

    The significance level and bootstrap count are the runs' `eval:` settings; `resamples`
    (0: no bootstrap) and `alpha` override them (the index's "eval"). A grid's sibling cells
    <runs_dir>-<key>=<value>/ are one experiment, in <runs_dir>/summary/, axes as columns.
    """
    runs_dir = Path(runs_dir)
    runs = scan(runs_dir, recompute=recompute)
    settings = experiment_eval(runs, resamples=resamples, alpha=alpha)
    out_dir = runs_dir / "summary"
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    by = axis_names(runs)
    notes = single_class_notes(runs)
    tables, compared = metric_tables(runs_dir, runs, settings.eval, progress)
    loss, figures, loss_notes = loss_figures(runs, fig_dir)
    if loss is not None:
        tables["loss"] = ("loss.csv", loss)
    auroc_figs, volcano_notes = auroc_figures(compared, fig_dir, settings.eval.alpha, by)
    figures += auroc_figs
    bench_path = Path(benchmark) if benchmark else find_benchmark(runs_dir)
    if bench_path is not None:
        tables["benchmark"], bench_figures = benchmark_figure(bench_path, fig_dir)
        figures += bench_figures
    for csv_name, frame in tables.values():
        frame.to_csv(out_dir / csv_name, index=False)
    seeds = T.seeds_ran(runs)
    said = report_notes(runs, compared, notes + loss_notes, volcano_notes)
    report = out_dir / "report.html"
    report.write_text(page(runs_dir, runs, settings, tables, figures, said), encoding="utf-8")
    return {
        "report": str(report),
        "eval": settings.as_dict(),
        "tables": {k: str(out_dir / name) for k, (name, _) in tables.items()},
        "figures": sorted(str(p) for p in fig_dir.iterdir()),
        "summary": _clean(S.summary_table(compared, by=by)),
        "runs": len(runs),
        "axes": by,
        "seeds": seeds,
        "data": T.data_records(runs),
        "random_weights": any(random_weights(r) for r in runs),
        "learned_nothing": sorted(said["learned_nothing"]),
        "below_chance": said["below_chance"],
        "notes": said["general"] + said["one_seed"],
        "tracked": log_to_tracking(runs, out_dir),
    }


def report_notes(
    runs: list[Run], compared: pd.DataFrame, general: list[str], volcano: list[str]
) -> dict[str, Any]:
    """What the page says beside its tables (`report_html.page`'s `notes`)."""
    return {
        "general": general,
        "below_chance": T.below_chance(compared, axis_names(runs)),
        "one_seed": T.one_seed_notes(compared, T.seeds_ran(runs)) + volcano,
        "learned_nothing": learned_nothing(runs),
    }


def log_to_tracking(runs: list[Run], report_dir: Path) -> int:
    """Attach the report to each run's MLflow run (`qcxr.train.tracking.log_report`) when any
    run recorded one (tracking.json); how many were. 0 without tracking or without the module."""
    run_dirs = [r.path for r in runs]
    if not any((d / "tracking.json").is_file() for d in run_dirs):
        return 0
    try:
        from qcxr.train.tracking import log_report
    except ImportError as err:  # the tracking module is optional; the report stands without it
        print(f"warning: report not attached to tracking runs: {err}", file=sys.stderr)
        return 0
    return int(log_report(run_dirs, report_dir))


def _clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]
