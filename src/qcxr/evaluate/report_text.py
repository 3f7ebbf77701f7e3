"""What the report says in words: the data it ran on, what each column means, which seeds ran,
below-chance AUROCs and what one seed cannot show.

Each function returns plain text or small records; `report_html` turns them into HTML.

The data a run used is its config.yaml (data.study, data.format, data.csv, task, labels) and
versions.json (the sha256 of every label file, the backbone weights that were loaded). A study
written by `qcxr synth` carries a marker, `SYNTHETIC_MARKER`, at its root; a table-format study
(data.format table or chexpert) carries it beside its label CSV.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from qcxr.config import TABLE_FORMATS, EvalConfig
from qcxr.evaluate.runs import Run, random_weights
from qcxr.evaluate.stats import MEAN
from qcxr.labels import resolve_task

SYNTHETIC_MARKER = "synthetic.json"


def study_dirs(run: Run) -> list[Path]:
    """Where a run's study marker may lie: the study root, or beside each label table."""
    data = run.config.data if run.config is not None else None
    if data is None:
        return []
    if data.format in TABLE_FORMATS:
        files = data.csv.values() if isinstance(data.csv, dict) else [data.csv]
        return list(dict.fromkeys(Path(f).parent for f in files if f))
    return [Path(data.study)] if data.study else []


def synthetic_marker(run: Run) -> tuple[Path | None, dict[str, Any] | None]:
    """(the marker file, its contents) of the run's study when it is synthetic, else (None,
    None). A marker that is not a JSON object still marks the study synthetic (contents {})."""
    for directory in study_dirs(run):
        path = directory / SYNTHETIC_MARKER
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                found = {}
            return path, found if isinstance(found, dict) else {}
    return None, None


def data_kind(run: Run) -> str:
    """One phrase: a synthetic study (with its marker), real label files, or unknown."""
    dirs = study_dirs(run)
    marker, contents = synthetic_marker(run)
    if marker is not None:
        said = ", ".join(
            f"{k} = {v}" for k, v in (contents or {}).items() if not isinstance(v, dict | list)
        )
        return f"SYNTHETIC study (qcxr synth; marker {marker}{': ' + said if said else ''})"
    if not dirs:
        return "unknown: the run records no study (config.yaml lacks data.study / data.csv)"
    if not any(d.is_dir() for d in dirs):
        return f"unknown: the study {', '.join(map(str, dirs))} is not on this machine"
    return (
        f"real label files: no {SYNTHETIC_MARKER} marker in {', '.join(map(str, dirs))} (a study "
        "that qcxr synth wrote before it left the marker has none either)"
    )


def label_set(run: Run) -> str:
    """The run's task and its labels in qubit order."""
    if run.config is None:
        return f"{run.task} (no config.yaml)"
    task = resolve_task(run.config.task, run.config.labels)
    return f"{task.name}: {', '.join(task.labels)} ({len(task.labels)} labels)"


def weights_identity(run: Run) -> str:
    """The backbone weights the run loaded (versions.json), said plainly when random."""
    loaded = run.versions.get("weights")
    configured = run.config.model.weights if run.config is not None else None
    name = str(loaded or configured or "unknown")
    if configured and loaded and configured != loaded:
        name += f" (config.yaml asked for {configured})"
    if random_weights(run):
        return f"RANDOM, not pretrained: {name}"
    return name


def data_records(runs: list[Run]) -> list[dict[str, Any]]:
    """The distinct (data, label files, label set, weights) the runs used, with the runs of each."""
    found: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        checksums = run.versions.get("label_files_sha256") or {}
        record = {
            "data": data_kind(run),
            "format": run.config.data.format if run.config is not None else "unknown",
            "label_files_sha256": dict(checksums),
            "labels": label_set(run),
            "weights": weights_identity(run),
        }
        key = json.dumps(record, sort_keys=True)
        found.setdefault(key, {**record, "runs": []})["runs"].append(run.name)
    return list(found.values())


def seeds_ran(runs: list[Run]) -> dict[str, list[int]]:
    """{"<axes> task/head": the seeds found on disk, sorted}: what actually ran."""
    out: dict[str, list[int]] = {}
    for run in sorted(runs, key=lambda r: (tuple(r.axes.items()), r.task, r.head, r.seed)):
        cell = "/".join([*(f"{k}={v}" for k, v in run.axes.items()), run.task, run.head])
        out.setdefault(cell, []).append(run.seed)
    return out


def configured_seeds(runs: list[Run]) -> list[int]:
    """The union of the seed lists the runs' config.yaml name (train.seeds), for comparison."""
    seeds = {s for r in runs if r.config is not None for s in r.config.train.seeds}
    return sorted(seeds)


def below_chance(compared: pd.DataFrame, by: list[str]) -> list[str]:
    """One line per task, test set and head naming the labels whose seed-mean AUROC is < 0.5."""
    lines = []
    keys = ["task", "testset", *by]
    for values, part in compared.groupby(keys, sort=True):
        where = "/".join(str(v) for v in values)
        for head in ("cdl", "dqc"):
            low = part[part[f"{head}_mean"] < 0.5]
            if low.empty:
                continue
            named = ", ".join(
                f"{'mean over labels' if r.label == MEAN else r.label} {getattr(r, head + '_mean'):.3f}"
                for r in low.itertuples()
            )
            lines.append(f"{where} {head.upper()}: {named}")
    return lines


BELOW_CHANCE_TEXT = (
    "AUROC below 0.5: the model ranks negative images above positive ones more often than not. "
    "With few positive test images that is mostly noise (each run's metrics.json gives the "
    "positives per label); well below 0.5 on many positives points to labels that do not line "
    "up with the predictions, or to a model that learned nothing."
)


def one_seed_notes(compared: pd.DataFrame, seeds: dict[str, list[int]]) -> list[str]:
    """Why some numbers are missing: a head with one seed has no std, a paired t-test needs
    at least two seeds of each head, and a missing head leaves nothing to compare."""
    notes = []
    heads = {cell.rsplit("/", 1)[-1] for cell in seeds}
    for head in ("cdl", "dqc"):
        if head not in heads:
            notes.append(f"no {head.upper()} runs were found: nothing to compare with, so no "
                         "% difference, p or volcano plot")  # fmt: skip
    few = [f"{cell} ({len(s)} seed)" for cell, s in seeds.items() if len(s) < 2]
    if few:
        notes.append(
            "one seed only for " + ", ".join(few) + ": no standard deviation (shown as "
            "'(1 seed)') and no paired t-test, which needs at least two seeds of each head "
            "(p and marks 'n.a.', no volcano plot)"
        )
    elif not compared.empty and not compared["p"].astype(float).map(math.isfinite).any():
        notes.append("no paired t-test could be computed (fewer than two seed pairs)")
    return notes


def column_glossary(settings: EvalConfig) -> list[tuple[str, str]]:
    """(column, meaning) for the summary and stats tables."""
    a = f"{settings.alpha:g}"
    return [
        ("cdl, dqc / cdl_mean, dqc_mean", "the AUROC averaged over seeds (mean of the per-seed "
         "values); '± x' is the sample standard deviation over seeds (ddof = 1)"),
        ("cdl_std, dqc_std", "sample standard deviation over seeds; NaN / '(1 seed)' with one seed"),
        ("seeds, cdl_seeds, dqc_seeds, pairs", "seeds found for CDL/DQC; pairs = seeds present "
         "for both heads, the pairs of the t-test"),
        ("pct_diff", "eq. (4) of the paper, the symmetric percent difference of the seed means: "
         "100 × 2 × (CDL − DQC) / (CDL + DQC). Positive: CDL better. Symmetric: swapping the "
         "heads flips its sign only, unlike a difference relative to one of them"),
        ("t, p", "paired t-test over seeds (scipy.stats.ttest_rel, two-sided; pairs matched by "
         "seed), as in the paper; unadjusted for the number of labels"),
        ("mark", "the paper's marks from the unadjusted p: ns p ≥ 0.05, * p < 0.05, "
         "** p < 0.01, *** p < 0.001; n.a. without a test (fewer than two pairs)"),
        ("p_holm, mark_holm", "Holm's step-down adjustment of p over the labels of one task and "
         "test set (the mean row is one test: p_holm = p), and its mark. The per-label figures "
         "show mark_holm; the mean-AUROC figure shows mark (one test per pair)"),
        ("volcano plot", f"y = −log10 of the unadjusted p, x = sign-kept log2(1 + |pct_diff|); "
         f"the dashed line is p = {a} (eval.alpha): points above it are p < {a} before "
         "any adjustment"),
        ("bootstrap lo, hi", f"central {100 * (1 - settings.alpha):g}% percentile interval of "
         f"the seed-mean AUROC over {settings.bootstrap} resamples of the test images"),
    ]  # fmt: skip
