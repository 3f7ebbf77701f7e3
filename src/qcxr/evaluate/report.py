"""`qcxr report RUNS_DIR`: every run of an experiment -> tables, figures and one report.html.

Reads runs/<experiment>/<task>/<head>/seed-<k>/ (config.yaml, history.csv, metrics.json,
predictions-<testset>.parquet; metrics.json is computed from the predictions when missing) and
writes runs/<experiment>/summary/:

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

history.csv: the columns read are epoch, step, train_loss, val_loss (see plots.read_history).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import importlib.metadata
import json
import math
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from qcxr.config import EvalConfig
from qcxr.evaluate import metrics as M
from qcxr.evaluate import plots as P
from qcxr.evaluate import stats as S
from qcxr.labels import CXR8, CXR14

SEED_DIR = re.compile(r"^seed-(\d+)$")


@dataclass
class Run:
    task: str
    head: str
    seed: int
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)  # versions.json (training engineer)
    history: pd.DataFrame | None = None

    @property
    def predictions(self) -> dict[str, Path]:
        return {M.testset_of(p): p for p in M.prediction_files(self.path)}


def _weights_identities(value: Any, key: str = "") -> list[str]:
    """Every string under a key containing 'weights' anywhere in a nested config."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _weights_identities(v, str(k))]
    if isinstance(value, list):
        return [s for v in value for s in _weights_identities(v, key)]
    return [value] if isinstance(value, str) and "weights" in key.lower() else []


def weights_of(run: Run) -> list[str]:
    """Backbone weight identities named by the run's config.yaml and versions.json."""
    found = _weights_identities(run.config) + _weights_identities(run.versions)
    return [w for w in dict.fromkeys(found) if w]


def random_weights(run: Run) -> bool:
    """True when the run's backbone was not pretrained: a weights field says "random"."""
    return any("random" in w.lower() for w in weights_of(run))


def scan(runs_dir: str | Path, *, recompute: bool = False) -> list[Run]:
    """Every <task>/<head>/seed-<k>/ run under `runs_dir`, with config, metrics and history."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: runs directory not found")
    runs = []
    for path in sorted(runs_dir.glob("*/*/seed-*")):
        match = SEED_DIR.match(path.name)
        if not match or not path.is_dir() or path.parts[-3] == "summary":
            continue
        run = Run(task=path.parts[-3], head=path.parts[-2].lower(), seed=int(match[1]), path=path)
        if (path / "config.yaml").is_file():
            loaded = yaml.safe_load((path / "config.yaml").read_text())
            run.config = loaded if isinstance(loaded, dict) else {}
        if (path / "versions.json").is_file():
            run.versions = json.loads((path / "versions.json").read_text())
        if (path / "history.csv").is_file():
            run.history = P.read_history(path / "history.csv")
        metrics_path = path / "metrics.json"
        stale = metrics_path.is_file() and any(
            p.stat().st_mtime > metrics_path.stat().st_mtime for p in run.predictions.values()
        )
        if run.predictions and (recompute or stale or not metrics_path.is_file()):
            M.write_metrics(path)
        if (path / "metrics.json").is_file():
            run.metrics = M.read_metrics(path)
        runs.append(run)
    if not runs:
        raise FileNotFoundError(f"{runs_dir}: no run directories <task>/<head>/seed-<k>/ found")
    return runs


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


def bootstrap_table(runs: list[Run], resamples: int, progress: bool = False) -> pd.DataFrame:
    """Bootstrap CIs for every (task, testset), from the runs' predictions."""
    frames = []
    keys = sorted({(r.task, t) for r in runs for t in r.predictions})
    for task, testset in keys:
        by_head: dict[str, list] = {}
        labels = None
        for run in sorted(runs, key=lambda r: (r.head, r.seed)):
            if run.task != task or testset not in run.predictions:
                continue
            ids, names, probs, truth = M.read_predictions(run.predictions[testset])
            if labels is not None and names != labels:
                raise ValueError(f"{run.predictions[testset]}: labels differ from other seeds'")
            labels = names
            by_head.setdefault(run.head, []).append((ids, probs, truth))
        where = f"{task}/{testset}"
        out = S.bootstrap_auroc(
            by_head, labels, resamples=resamples, where=where, progress=progress
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


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "qcxr",
        "jax",
        "flax",
        "optax",
        "orbax-checkpoint",
        "pennylane",
        "numpy",
        "scipy",
        "scikit-learn",
        "pandas",
        "matplotlib",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


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
    tables: dict[str, tuple[str, pd.DataFrame]],
    figures: list[tuple[Path, str]],
    notes: list[str],
) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>qcxr report: {html.escape(runs_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>qcxr report: {html.escape(runs_dir.name)}</h1>",
        f"<p class='meta'>{html.escape(str(runs_dir.resolve()))} · {len(runs)} runs · generated "
        f"{dt.datetime.now().isoformat(timespec='seconds')}</p>",
    ]
    random_runs = [r for r in runs if random_weights(r)]
    if random_runs:
        names = ", ".join(f"{r.task}/{r.head}/seed-{r.seed}" for r in random_runs)
        parts.append(
            "<div class='banner' id='random-weights'>WARNING: the backbone of "
            f"{len(random_runs)} of {len(runs)} runs used RANDOM, not pretrained, weights "
            f"({html.escape(names)}). These numbers say nothing about ImageNet transfer "
            "learning and are not comparable with the paper.</div>"
        )
    for note in notes:
        parts.append(f"<p class='meta'>{html.escape(note)}</p>")
    parts.append("<h2>Summary: mean AUROC, CDL vs DQC</h2>")
    parts.append(_table_html(tables["summary"][1], "Mean AUROC across seeds", tables["summary"][0]))
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(png, caption) for png, caption in figures]
    parts.append("<h2>Tables</h2>")
    titles = {
        "stats": "CDL vs DQC per label: paired t-test, eq. (4) % diff., Holm-adjusted p",
        "bootstrap": "Bootstrap confidence intervals of seed-mean AUROC",
        "groups": "Head / medium / tail means per run",
        "auroc": "AUROC, AP and F1 per run and label",
        "loss": "Loss curves (mean and std over seeds)",
        "benchmark": "Benchmark (Table III)",
        "runs": "Runs",
    }
    for key, title in titles.items():
        if key in tables:
            parts.append(_table_html(tables[key][1], title, tables[key][0]))
    parts.append("<h2>Run configurations</h2>")
    for run in runs:
        text = yaml.safe_dump(run.config, sort_keys=False) if run.config else "(no config.yaml)"
        parts.append(
            f"<details><summary>{html.escape(f'{run.task}/{run.head}/seed-{run.seed}')}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )
    parts.append("<h2>Software versions (this report)</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(_versions(), indent=1))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    runs_dir: str | Path,
    *,
    resamples: int | None = None,
    benchmark: str | Path | None = None,
    recompute: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write summary/ (CSV tables, figures, report.html) for an experiment; returns an index."""
    runs_dir = Path(runs_dir)
    runs = scan(runs_dir, recompute=recompute)
    resamples = EvalConfig().bootstrap if resamples is None else resamples
    out_dir = runs_dir / "summary"
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    notes = []

    auroc = S.long_table(
        {"task": r.task, "head": r.head, "seed": r.seed, "metrics": r.metrics}
        for r in runs
        if r.metrics
    )
    if auroc.empty:
        raise FileNotFoundError(f"{runs_dir}: no run has metrics.json or predictions to evaluate")
    single: dict[str, set[str]] = {}
    for r in runs:
        for testset, m in r.metrics.get("testsets", {}).items():
            nan_labels = [k for k, v in m["labels"].items() if not math.isfinite(v["auroc"])]
            single.setdefault(f"{r.task}/{testset}", set()).update(
                m.get("single_class", nan_labels)
            )
    for where, names in sorted(single.items()):
        if names:
            notes.append(
                f"{where}: single class in the test set, AUROC/AP NaN and left out of means: "
                + ", ".join(sorted(names))
            )
    compared = S.compare(auroc)
    tables: dict[str, tuple[str, pd.DataFrame]] = {
        "auroc": ("auroc.csv", auroc),
        "stats": ("stats.csv", compared),
        "summary": ("summary.csv", pd.DataFrame(S.summary_table(compared))),
        "groups": ("groups.csv", groups_table(runs)),
        "runs": ("runs.csv", runs_table(runs)),
    }
    if resamples > 0:
        tables["bootstrap"] = ("bootstrap.csv", bootstrap_table(runs, resamples, progress))
    figures: list[tuple[Path, str]] = []

    loss_frames = []
    for task in sorted({r.task for r in runs}):
        histories: dict[str, list[pd.DataFrame]] = {}
        for r in runs:
            if r.task == task and r.history is not None:
                histories.setdefault(r.head, []).append(r.history)
        if not histories:
            notes.append(f"{task}: no history.csv found, no loss curves")
            continue
        table = P.loss_table(histories)
        loss_frames.append(table.assign(task=task))
        paths = P.loss_curves(table, fig_dir / f"loss-{task}", title=f"{task.upper()}: loss")
        figures.append((paths[0], f"Fig. 4: training and validation loss, {task.upper()}"))
    if loss_frames:
        tables["loss"] = ("loss.csv", pd.concat(loss_frames, ignore_index=True))

    paths = P.mean_auroc_bars(compared, fig_dir / "mean-auroc")
    figures.append((paths[0], "Fig. 5: mean AUROC, CDL vs DQC, mean ± std over seeds"))
    for (task, testset), _ in compared.groupby(["task", "testset"]):
        paths = P.label_auroc_bars(compared, task, testset, fig_dir / f"auroc-{task}-{testset}")
        figures.append((paths[0], f"Figs. 6-11: per-label AUROC, {task.upper()}, {testset}"))
    present = set(compared["label"])
    for name, labels, caption in (
        ("volcano-cxr8", list(CXR8), "Fig. 12: volcano plot, CXR-8 labels"),
        ("volcano-cxr14", [x for x in CXR14 if x not in CXR8], "Fig. 13: CXR-14 added labels"),
    ):
        if present & set(labels):
            paths = P.volcano(compared, labels, fig_dir / name, title=caption)
            figures.append((paths[0], caption))

    bench_path = Path(benchmark) if benchmark else find_benchmark(runs_dir)
    if bench_path is not None:
        bench = P.read_benchmark(bench_path)
        tables["benchmark"] = ("benchmark.csv", bench)
        paths = P.benchmark_bars(bench, fig_dir / "benchmark")
        figures.append((paths[0], f"Table III as bars, from {bench_path}"))

    for csv_name, frame in tables.values():
        frame.to_csv(out_dir / csv_name, index=False)
    report = out_dir / "report.html"
    report.write_text(_html(runs_dir, runs, tables, figures, notes), encoding="utf-8")
    return {
        "report": str(report),
        "tables": {k: str(out_dir / name) for k, (name, _) in tables.items()},
        "figures": sorted(str(p) for p in fig_dir.iterdir()),
        "summary": _clean(S.summary_table(compared)),
        "runs": len(runs),
        "random_weights": any(random_weights(r) for r in runs),
        "notes": notes,
    }


def _clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]
