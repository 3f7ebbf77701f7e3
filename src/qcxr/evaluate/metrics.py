"""Per-run metrics from a predictions parquet: AUROC, average precision, F1, head/medium/tail means.

Predictions parquet (qcxr.train.predictions, docs/ARCHITECTURE.md): column "id", then for each
label L in task order "p:L" (probability) and "y:L" (truth 0/1, NaN where unknown). Rows with unknown truth are left out
of that label only. A label whose known rows hold a single class gets NaN for AUROC and AP and a
warning that names it; every mean says how many labels it covers.

AUROC and AP are computed here (tie-aware, weighted, vectorised) rather than by scikit-learn so
that the bootstrap in `stats` can score a thousand resamples as one array operation; the tests
check both against scikit-learn.

The F1 threshold and the head/medium/tail boundaries are the run's `eval:` settings
(config.EvalConfig, read from its config.yaml); metrics.json records the ones it used.

Predictions are checked before anything is computed from them (qcxr.evaluate.predictions:
probabilities in [0, 1], truth 0/1/NaN, unique ids, and the ids and truth of the test set's
label file when the run's config names a study).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qcxr import rundir
from qcxr.config import TABLE_FORMATS, Config, EvalConfig
from qcxr.evaluate.diagnosis import diagnose_run
from qcxr.evaluate.predictions import checked_predictions
from qcxr.labels import PAPER_TRAIN_COUNTS, canonical

GROUPS = ("head", "medium", "tail")
METRICS = ("auroc", "ap", "f1")


class SingleClassWarning(UserWarning):
    """A label has only one class among a test set's known rows: its AUROC and AP are NaN."""


def _tied_runs(scores: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of `scores` and the last index of each run of equal sorted scores."""
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    s = scores[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return order, ends


def weighted_auroc(
    scores: np.ndarray,
    truth: np.ndarray,
    weights: np.ndarray,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """AUROC (Mann-Whitney, ties count one half) for each row of `weights` (R, N) over N cases.

    A weight is a multiplicity, so a bootstrap resample is a row of counts; cases where `known`
    is False are left out. NaN where a row has no positive or no negative weight. Cost is one
    cumulative sum over the negatives per row: for each positive, the negatives below it and
    tied with it are found once by binary search, independently of the weights.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    keep = np.ones(len(scores), bool) if known is None else np.asarray(known, dtype=bool)
    w = np.atleast_2d(np.asarray(weights))
    pos = np.flatnonzero(truth & keep)
    neg = np.flatnonzero(~truth & keep)
    neg = neg[np.argsort(scores[neg], kind="mergesort")]
    neg_scores = scores[neg]
    below = np.searchsorted(neg_scores, scores[pos], side="left")
    up_to = np.searchsorted(neg_scores, scores[pos], side="right")
    # integer counts stay integers, so the sums are exact; int32 while totals allow (2x faster)
    if np.issubdtype(w.dtype, np.integer):
        acc = np.int32 if 2 * len(scores) * max(1, int(w.max(initial=0))) < 2**31 else np.int64
        wide = np.int64
    else:
        acc = wide = np.float64
    cum = np.zeros((w.shape[0], len(neg) + 1), dtype=acc)
    np.cumsum(np.take(w, neg, axis=1), axis=1, dtype=acc, out=cum[:, 1:])
    wp = np.take(w, pos, axis=1).astype(wide)
    twice_wins = (wp * (np.take(cum, below, axis=1) + np.take(cum, up_to, axis=1))).sum(axis=1)
    n_pos, n_neg = wp.sum(axis=1), cum[:, -1].astype(wide)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = twice_wins / (2.0 * n_pos.astype(np.float64) * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve; NaN when `truth` has one class."""
    return float(weighted_auroc(scores, truth, np.ones((1, len(scores)), dtype=np.int64))[0])


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision as scikit-learn defines it: sum over thresholds of dRecall * precision.

    NaN when `truth` has one class (no positives: undefined; no negatives: trivially 1).
    """
    truth = np.asarray(truth, dtype=bool)
    n_pos = int(truth.sum())
    if n_pos == 0 or n_pos == len(truth):
        return math.nan
    order, ends = _tied_runs(np.asarray(scores, dtype=np.float64), descending=True)
    y = truth[order].astype(np.float64)
    tp = np.cumsum(y)[ends]
    fp = (ends + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def f1_at(scores: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """F1 of the prediction `score >= threshold`; NaN when there is nothing to score."""
    truth = np.asarray(truth, dtype=bool)
    pred = np.asarray(scores) >= threshold
    tp = int(np.sum(pred & truth))
    denom = 2 * tp + int(np.sum(pred & ~truth)) + int(np.sum(~pred & truth))
    return 2 * tp / denom if denom else math.nan


def group_of(count: float | None, config: EvalConfig) -> str | None:
    """ "head" (> head_min_count), "tail" (< tail_max_count) or "medium"; None if count unknown."""
    if count is None or not math.isfinite(count):
        return None
    if count > config.head_min_count:
        return "head"
    if count < config.tail_max_count:
        return "tail"
    return "medium"


def _mean(values: list[float]) -> tuple[float, int]:
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else math.nan), len(finite)


def _summary(per_label: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Means of each metric over `names`, each with the number of labels it covers."""
    out: dict[str, Any] = {"labels_total": len(names), "n_labels": {}}
    for metric in METRICS:
        out[metric], out["n_labels"][metric] = _mean([per_label[n][metric] for n in names])
    out["labels"] = list(names)
    return out


def label_metrics(
    probs: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    *,
    config: EvalConfig,
    where: str = "predictions",
) -> dict[str, dict[str, Any]]:
    """Per label: auroc, ap, f1 (at config.f1_threshold), n (known rows), positives."""
    out = {}
    for j, name in enumerate(labels):
        known = np.isfinite(truth[:, j])
        y, p = truth[known, j] == 1, probs[known, j]
        positives = int(y.sum())
        if positives in (0, len(y)):
            warnings.warn(
                f"{where}: label {name!r} has a single class among its {len(y)} known rows "
                f"({positives} positive); AUROC and AP are NaN",
                SingleClassWarning,
                stacklevel=2,
            )
        out[name] = {
            "auroc": auroc(p, y) if len(y) else math.nan,
            "ap": average_precision(p, y) if len(y) else math.nan,
            "f1": f1_at(p, y, config.f1_threshold),
            "n": int(len(y)),
            "positives": positives,
        }
    return out


def metrics_from_arrays(
    probs: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    *,
    train_counts: dict[str, float] | None = None,
    config: EvalConfig,
    where: str = "predictions",
) -> dict[str, Any]:
    """Per-label metrics, their means and head/medium/tail means (by training-set count)."""
    per_label = label_metrics(probs, truth, labels, config=config, where=where)
    counts = {canonical(k): v for k, v in (train_counts or {}).items()}
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in labels:
        group = group_of(counts.get(canonical(name)), config)
        per_label[name]["train_count"] = counts.get(canonical(name))
        per_label[name]["group"] = group
        if group:
            groups[group].append(name)
    return {
        "n_images": int(probs.shape[0]),
        "single_class": [n for n in labels if per_label[n]["positives"] in (0, per_label[n]["n"])],
        "labels": per_label,
        "mean": _summary(per_label, labels),
        "groups": {g: _summary(per_label, names) for g, names in groups.items()},
        "f1_threshold": config.f1_threshold,
        "group_rule": {
            "head_min_count": config.head_min_count,
            "tail_max_count": config.tail_max_count,
        },
    }


def metrics_for(
    path: str | Path,
    *,
    train_counts: dict[str, float] | None = None,
    config: EvalConfig,
    settings: Config | None = None,
) -> dict[str, Any]:
    """Metrics of one predictions parquet; single-class warnings are recorded in the result.

    The predictions are checked first (`checked_predictions`; against the test set's label file
    when `settings`, the run's config, names a study); its notes join the warnings."""
    _, labels, probs, truth, checks = checked_predictions(path, settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SingleClassWarning)
        result = metrics_from_arrays(
            probs, truth, labels, train_counts=train_counts, config=config, where=str(path)
        )
    notes = [str(w.message) for w in caught if issubclass(w.category, SingleClassWarning)]
    for note in notes:  # re-issue so callers still see them
        warnings.warn(note, SingleClassWarning, stacklevel=2)
    result["warnings"] = notes + checks
    result["predictions"] = Path(path).name
    return result


def train_counts_from_csv(path: str | Path) -> dict[str, float]:
    """Positive count per canonical label in an NIH-CXR-LT style label CSV (0/1 columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training label file not found")
    frame = pd.read_csv(path)
    counts = {}
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        finite = values.dropna()
        if len(finite) and finite.isin([0, 1]).all() and column not in ("id", "subj_id"):
            counts[canonical(column)] = float(finite.sum())
    if not counts:
        raise ValueError(f"{path}: no 0/1 label columns found")
    return counts


def run_config(run_dir: str | Path) -> Config | None:
    """The run's config.yaml (None when it has none); an error names a file that does not load."""
    return rundir.read_config(run_dir) if (Path(run_dir) / rundir.CONFIG).is_file() else None


def eval_of(config: Config | None) -> tuple[EvalConfig, str]:
    """The `eval:` section of a run's config and where it came from ("config.yaml"), or the
    paper's defaults ("default") for a run directory without a config.yaml."""
    return (config.eval, rundir.CONFIG) if config is not None else (EvalConfig(), "default")


def run_train_counts(
    run_dir: str | Path, config: Config | None = None
) -> tuple[dict[str, float], str]:
    """Training-set label counts for a run and where they came from.

    Looked for, in order: train_counts.json in the run dir (training writes it); the NIH
    training CSV of the study root `data.study` of the run's config; else the paper's Table I
    counts.
    """
    counts = rundir.read_train_counts(run_dir)
    if counts is not None:
        return counts, rundir.TRAIN_COUNTS
    if config is not None and config.data.format in TABLE_FORMATS and config.data.csv:
        from qcxr.config import task_of
        from qcxr.data.study import open_study

        train = open_study(config.data, task_of(config)).dataset("train")
        counts = np.nansum(train.labels, axis=0)
        return dict(zip(train.label_names, map(float, counts), strict=True)), str(train.label_file)
    if config is not None and config.data.study:
        from qcxr.data.datasets import study_paths

        csv = study_paths(config.data.study).nih_csv["train"]
        if csv.is_file():
            return train_counts_from_csv(csv), str(csv)
    return {k: float(v) for k, v in PAPER_TRAIN_COUNTS.items()}, "paper Table I"


def write_metrics(
    run_dir: str | Path,
    config: EvalConfig | None = None,
    *,
    train_counts: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Compute metrics for every predictions file of a run and write <run_dir>/metrics.json.

    Every file is checked first (`metrics_for`): a bad one is an error naming it, and nothing
    is written. "diagnosis" says whether the model learned anything (qcxr.evaluate.diagnosis).
    `config`: the evaluation settings (F1 threshold, head/medium/tail boundaries); None: the
    `eval:` section of the run's config.yaml, or the paper's defaults without one. The result
    records them under "eval", with their source.
    """
    run_dir = Path(run_dir)
    files = rundir.prediction_files(run_dir)
    if not files:
        raise FileNotFoundError(
            f"{run_dir}: no predictions-<testset>.parquet files; run `qcxr train` (or the "
            "training run's prediction step) first"
        )
    settings = run_config(run_dir)
    eval_source = "given"
    if config is None:
        config, eval_source = eval_of(settings)
    counts_source = "given"
    if train_counts is None:
        train_counts, counts_source = run_train_counts(run_dir, settings)
    result = {
        "run": str(run_dir),
        "eval": {
            "f1_threshold": config.f1_threshold,
            "head_min_count": config.head_min_count,
            "tail_max_count": config.tail_max_count,
            "source": eval_source,
        },
        "train_counts_source": counts_source,
        "testsets": {
            rundir.testset_of(f): metrics_for(
                f, train_counts=train_counts, config=config, settings=settings
            )
            for f in files
        },
    }
    result["diagnosis"] = diagnose_run(run_dir, result, settings)  # did it learn anything?
    rundir.write_json(run_dir / rundir.METRICS, jsonable(result))
    return result


def jsonable(value: Any) -> Any:
    """NaN/inf become null so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """metrics.json of a run, nulls back to NaN."""
    path = Path(run_dir) / rundir.METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `qcxr evaluate {run_dir}`")
    return _nan_back(rundir.read_json(path))


def _nan_back(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (math.nan if v is None and k in METRICS else _nan_back(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_nan_back(v) for v in value]
    return value
