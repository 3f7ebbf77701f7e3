"""`qcxr report RUNS_DIR`: every run of an experiment -> tables, figures and one report.html.

Reads runs/<experiment>/<task>/<head>/seed-<k>/ (the run directory layout of `qcxr.rundir`:
config.yaml, versions.json, history.csv, metrics.json, predictions-<testset>.parquet;
metrics.json is computed from the predictions when missing) and writes runs/<experiment>/summary/:

  auroc.csv      one row per (task, testset, head, seed, label) with auroc, ap, f1 ("mean" rows)
  groups.csv     head/medium/tail means per run, with the number of labels each covers
  stats.csv      CDL vs DQC per (task, testset, label): means, stds, % diff, t, p, marks, Holm
  summary.csv    the mean-AUROC rows of stats.csv as printed (mean +- std, % diff, p, mark)
  bootstrap.csv  bootstrap CIs of each head's seed-mean AUROC and of the CDL - DQC difference
  loss.csv       the numbers behind the loss curves
  runs.csv       one row per run: path, backbone weights, circuit backend and training source
                 as resolved (versions.json), epochs, best validation loss
  benchmark.csv  Table III numbers, when a benchmark CSV was found
  figures/*.png|svg and report.html (self-contained: figures embedded as base64 PNG)

The significance level (bootstrap intervals, the volcano plot's line) and the bootstrap count
are the runs' `eval:` settings (`runs.experiment_eval`); the report states the ones it used.
history.csv is read by `rundir.read_history` (columns epoch, step, train_loss, val_loss, ...).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from qcxr import rundir
from qcxr.config import EvalConfig
from qcxr.evaluate import plots as P
from qcxr.evaluate import stats as S
from qcxr.evaluate.diagnosis import diagnose_run, message
from qcxr.evaluate.predictions import read_predictions
from qcxr.evaluate.runs import (
    ReportSettings,
    Run,
    experiment_eval,
    random_weights,
    scan,
    weights_of,
)
from qcxr.labels import CXR8, CXR14
from qcxr.versions import REPORT_PACKAGES, package_versions

Tables = dict[str, tuple[str, pd.DataFrame]]  # key -> (CSV file name, table)
Figures = list[tuple[Path, str]]  # (PNG, caption)


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
    """Bootstrap CIs (central 1 - alpha) for every (task, testset), from the runs' predictions."""
    frames = []
    keys = sorted({(r.task, t) for r in runs for t in r.predictions})
    for task, testset in keys:
        by_head: dict[str, list] = {}
        labels = None
        for run in sorted(runs, key=lambda r: (r.head, r.seed)):
            if run.task != task or testset not in run.predictions:
                continue
            ids, names, probs, truth = read_predictions(run.predictions[testset])
            if labels is not None and names != labels:
                raise ValueError(f"{run.predictions[testset]}: labels differ from other seeds'")
            labels = names
            by_head.setdefault(run.head, []).append((ids, probs, truth))
        where = f"{task}/{testset}"
        out = S.bootstrap_auroc(
            by_head, labels, resamples=resamples, alpha=alpha, where=where, progress=progress
        )
        frames.append(out.assign(task=task, testset=testset))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table[["task", "testset", "head", "label", "estimate", "lo", "hi", "resamples"]]


def find_benchmark(runs_dir: Path) -> Path | None:
    """A Table III CSV beside the runs: benchmark*.csv, or bench/summary-*.csv (`qcxr bench`)."""
    found = sorted(runs_dir.glob("benchmark*.csv")) + sorted(runs_dir.glob("bench/summary-*.csv"))
    return found[0] if found else None


def _table_html(frame: pd.DataFrame, title: str, csv_name: str | None = None) -> str:
    if frame is None or frame.empty:
        return f"<h3>{html.escape(title)}</h3><p>(no data)</p>"
    source = f' <span class="src">({html.escape(csv_name)})</span>' if csv_name else ""
    body = frame.to_html(index=False, na_rep="NaN", float_format=lambda v: f"{v:.4g}", border=0)
    return f"<h3>{html.escape(title)}{source}</h3><div class='tbl'>{body}</div>"


def _figure_html(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(png.stem)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(png.name)}: {html.escape(caption)}</figcaption></figure>"
    )


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0} .meta{color:#666}
.banner{background:#b00020;color:#fff;font-weight:bold;padding:1em;font-size:1.2em;border-radius:4px}
figure{display:inline-block;margin:1em;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0} .tbl{overflow-x:auto;max-height:420px;overflow-y:auto}
.src{font-weight:normal;color:#888;font-size:.8em} pre{background:#f6f6f6;padding:.5em;font-size:.8em}
"""


def _html(
    runs_dir: Path,
    runs: list[Run],
    settings: ReportSettings,
    tables: Tables,
    figures: Figures,
    notes: list[str],
) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>qcxr report: {html.escape(runs_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>qcxr report: {html.escape(runs_dir.name)}</h1>",
        f"<p class='meta'>{html.escape(str(runs_dir.resolve()))} · {len(runs)} runs · generated "
        f"{dt.datetime.now().isoformat(timespec='seconds')}</p>",
        f"<p class='meta' id='eval-settings'>Evaluation settings: "
        f"{html.escape(settings.describe())}.</p>",
    ]
    random_runs = [r for r in runs if random_weights(r)]
    if random_runs:
        names = ", ".join(r.name for r in random_runs)
        parts.append(
            "<div class='banner' id='random-weights'>WARNING: the backbone of "
            f"{len(random_runs)} of {len(runs)} runs used RANDOM, not pretrained, weights "
            f"({html.escape(names)}). These numbers say nothing about ImageNet transfer "
            "learning and are not comparable with the paper.</div>"
        )
    parts += _learned_nothing_html(runs)
    for note in notes:
        parts.append(f"<p class='meta'>{html.escape(note)}</p>")
    parts.append("<h2>Summary: mean AUROC, CDL vs DQC</h2>")
    parts.append(_table_html(tables["summary"][1], "Mean AUROC across seeds", tables["summary"][0]))
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(png, caption) for png, caption in figures]
    parts.append("<h2>Tables</h2>")
    for key, title in _titles(settings.eval).items():
        if key in tables:
            parts.append(_table_html(tables[key][1], title, tables[key][0]))
    parts.append("<h2>Run configurations</h2>")
    for run in runs:
        text = (
            yaml.safe_dump(run.settings, sort_keys=False) if run.config else f"(no {rundir.CONFIG})"
        )
        parts.append(
            f"<details><summary>{html.escape(run.name)}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )
    parts.append("<h2>Software versions (this report)</h2>")
    parts.append(
        f"<pre>{html.escape(json.dumps(package_versions(REPORT_PACKAGES), indent=1))}</pre>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


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


def _learned_nothing_html(runs: list[Run]) -> list[str]:
    found = learned_nothing(runs)
    if not found:
        return []
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(said)}</li>" for name, said in found.items()
    )
    return [
        "<div class='banner' id='learned-nothing'>WARNING: in "
        f"{len(found)} of {len(runs)} runs the model learned nothing; their numbers are not "
        f"results.<ul>{items}</ul></div>"
    ]


def _titles(settings: EvalConfig) -> dict[str, str]:
    level = f"{100 * (1 - settings.alpha):g}%"
    return {
        "stats": "CDL vs DQC per label: paired t-test, eq. (4) % diff., Holm-adjusted p",
        "bootstrap": f"Bootstrap {level} confidence intervals of seed-mean AUROC "
        f"({settings.bootstrap} resamples)",
        "groups": "Head / medium / tail means per run",
        "auroc": f"AUROC, AP and F1 (threshold {settings.f1_threshold:g}) per run and label",
        "loss": "Loss curves (mean and std over seeds)",
        "benchmark": "Benchmark (Table III)",
        "runs": "Runs",
    }


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
    CDL vs DQC comparison the figures draw."""
    auroc = S.long_table(
        {"task": r.task, "head": r.head, "seed": r.seed, "metrics": r.metrics}
        for r in runs
        if r.metrics
    )
    if auroc.empty:
        raise FileNotFoundError(f"{runs_dir}: no run has metrics.json or predictions to evaluate")
    compared = S.compare(auroc)
    tables: Tables = {
        "auroc": ("auroc.csv", auroc),
        "stats": ("stats.csv", compared),
        "summary": ("summary.csv", pd.DataFrame(S.summary_table(compared))),
        "groups": ("groups.csv", groups_table(runs)),
        "runs": ("runs.csv", runs_table(runs)),
    }
    if settings.bootstrap > 0:
        boot = bootstrap_table(runs, settings.bootstrap, progress, alpha=settings.alpha)
        tables["bootstrap"] = ("bootstrap.csv", boot)
    return tables, compared


def loss_figures(runs: list[Run], fig_dir: Path) -> tuple[pd.DataFrame | None, Figures, list[str]]:
    """Fig. 4 per task from the runs' histories: (loss table, figures, notes)."""
    frames, figures, notes = [], [], []
    for task in sorted({r.task for r in runs}):
        histories: dict[str, list[pd.DataFrame]] = {}
        for r in runs:
            if r.task == task and r.history is not None:
                histories.setdefault(r.head, []).append(r.history)
        if not histories:
            notes.append(f"{task}: no history.csv found, no loss curves")
            continue
        table = P.loss_table(histories)
        frames.append(table.assign(task=task))
        paths = P.loss_curves(table, fig_dir / f"loss-{task}", title=f"{task.upper()}: loss")
        figures.append((paths[0], f"Fig. 4: training and validation loss, {task.upper()}"))
    return (pd.concat(frames, ignore_index=True) if frames else None), figures, notes


def auroc_figures(compared: pd.DataFrame, fig_dir: Path, alpha: float) -> Figures:
    """Figs. 5-13: mean and per-label AUROC bars, volcano plots (line at p = alpha)."""
    paths = P.mean_auroc_bars(compared, fig_dir / "mean-auroc")
    figures = [(paths[0], "Fig. 5: mean AUROC, CDL vs DQC, mean ± std over seeds")]
    for (task, testset), _ in compared.groupby(["task", "testset"]):
        paths = P.label_auroc_bars(compared, task, testset, fig_dir / f"auroc-{task}-{testset}")
        figures.append((paths[0], f"Figs. 6-11: per-label AUROC, {task.upper()}, {testset}"))
    present = set(compared["label"])
    for name, labels, caption in (
        ("volcano-cxr8", list(CXR8), "Fig. 12: volcano plot, CXR-8 labels"),
        ("volcano-cxr14", [x for x in CXR14 if x not in CXR8], "Fig. 13: CXR-14 added labels"),
    ):
        if present & set(labels):
            paths = P.volcano(compared, labels, fig_dir / name, title=caption, alpha=alpha)
            figures.append((paths[0], caption))
    return figures


def benchmark_figure(bench_path: Path, fig_dir: Path) -> tuple[pd.DataFrame, Figures]:
    bench = P.read_benchmark(bench_path)
    paths = P.benchmark_bars(bench, fig_dir / "benchmark")
    return bench, [(paths[0], f"Table III as bars, from {bench_path}")]


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
    (0: no bootstrap) and `alpha` override them. The index records them under "eval".
    """
    runs_dir = Path(runs_dir)
    runs = scan(runs_dir, recompute=recompute)
    settings = experiment_eval(runs, resamples=resamples, alpha=alpha)
    out_dir = runs_dir / "summary"
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    notes = single_class_notes(runs)
    tables, compared = metric_tables(runs_dir, runs, settings.eval, progress)
    loss, figures, loss_notes = loss_figures(runs, fig_dir)
    notes += loss_notes
    if loss is not None:
        tables["loss"] = ("loss.csv", loss)
    figures += auroc_figures(compared, fig_dir, settings.eval.alpha)
    bench_path = Path(benchmark) if benchmark else find_benchmark(runs_dir)
    if bench_path is not None:
        bench, bench_figures = benchmark_figure(bench_path, fig_dir)
        tables["benchmark"] = ("benchmark.csv", bench)
        figures += bench_figures
    for csv_name, frame in tables.values():
        frame.to_csv(out_dir / csv_name, index=False)
    report = out_dir / "report.html"
    report.write_text(_html(runs_dir, runs, settings, tables, figures, notes), encoding="utf-8")
    return {
        "report": str(report),
        "eval": settings.as_dict(),
        "tables": {k: str(out_dir / name) for k, (name, _) in tables.items()},
        "figures": sorted(str(p) for p in fig_dir.iterdir()),
        "summary": _clean(S.summary_table(compared)),
        "runs": len(runs),
        "random_weights": any(random_weights(r) for r in runs),
        "learned_nothing": sorted(learned_nothing(runs)),
        "notes": notes,
    }


def _clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]
