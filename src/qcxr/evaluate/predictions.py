"""Reading and checking a run's predictions files before any metric is computed from them.

Predictions parquet (qcxr.train.predictions, docs/ARCHITECTURE.md): column "id", then for each
label L in task order "p:L" (probability) and "y:L" (truth 0/1, NaN where unknown).

`read_predictions` checks the file itself: every "p:" value a finite probability in [0, 1]
(logits are refused), every "y:" value 0, 1 or NaN, ids unique. `check_against_labels` checks
it against the test set's label file when the run's config names a study: the ids must be
images of that file, with the truth it gives them (`reference_labels` reads it, keeping a few
read). Each error names the predictions file (inside the run directory) and the row, id or
column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qcxr import rundir
from qcxr.config import Config


def _numeric(frame: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(
                f"{path}: column {column!r} holds {frame[column].dtype} values, not numbers"
            )
    return frame[columns].to_numpy(dtype=np.float64)


def _at(ids: list[str], row: int) -> str:
    return f"row {row} (id {ids[row]!r})"


def read_predictions(path: str | Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(ids, labels, probabilities (N, n), truth (N, n) with NaN unknown) from a parquet file.

    Checked: ids present and unique, every "p:" value a finite probability in [0, 1] (logits
    or scores are an error), every "y:" value 0, 1 or NaN; each error names the file, a row and
    its id, and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    frame = pd.read_parquet(path)
    if "id" not in frame.columns:
        raise ValueError(f"{path}: no 'id' column (columns: {list(frame.columns)[:6]}...)")
    labels = [c[2:] for c in frame.columns if c.startswith("p:")]
    if not labels:
        raise ValueError(f"{path}: no probability columns named 'p:<label>'")
    missing = [f"y:{name}" for name in labels if f"y:{name}" not in frame.columns]
    if missing:
        raise ValueError(f"{path}: probability columns without truth columns: {missing}")
    if frame["id"].isna().any():
        row = int(np.flatnonzero(frame["id"].isna().to_numpy())[0])
        raise ValueError(f"{path}: row {row} has no id")
    ids = frame["id"].astype(str).tolist()
    duplicated = frame["id"].astype(str).duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = ids[int(np.flatnonzero(duplicated)[0])]
        rows = [r for r in np.flatnonzero(duplicated).tolist() if ids[r] == first][:5]
        count = len({ids[r] for r in np.flatnonzero(duplicated)})
        raise ValueError(
            f"{path}: id {first!r} occurs on rows {rows} ({count} id(s) occur more than "
            "once); each image must be predicted once"
        )
    probs = _numeric(frame, [f"p:{n}" for n in labels], path)
    truth = _numeric(frame, [f"y:{n}" for n in labels], path)
    if not np.all(np.isfinite(probs)):
        row, col = np.argwhere(~np.isfinite(probs))[0]
        raise ValueError(
            f"{path}: non-finite probability {probs[row, col]} in {_at(ids, row)}, column "
            f"'p:{labels[col]}'"
        )
    outside = (probs < 0) | (probs > 1)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise ValueError(
            f"{path}: probability {probs[row, col]:.6g} in {_at(ids, row)}, column "
            f"'p:{labels[col]}', is outside [0, 1] ({int(outside.sum())} value(s) outside, "
            f"min {probs.min():.4g}, max {probs.max():.4g}); 'p:' columns must hold "
            "probabilities (sigmoid of the logits), not logits or scores"
        )
    bad_truth = (np.isfinite(truth) & (truth != 0) & (truth != 1)) | np.isinf(truth)
    if bad_truth.any():
        row, col = np.argwhere(bad_truth)[0]
        bad = np.unique(truth[bad_truth])[:5]
        raise ValueError(
            f"{path}: truth columns must be 0, 1 or NaN; found {bad.tolist()}, first "
            f"{truth[row, col]:g} in {_at(ids, row)}, column 'y:{labels[col]}'"
        )
    return ids, labels, probs, truth


_REFERENCES: dict[tuple, Any] = {}  # label files read for the check, by path, size and mtime
_KEPT = 4  # test sets kept read: a report's runs share a few


def _signature(*paths: Path) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.is_file())


def reference_labels(settings: Config | None, testset: str) -> tuple[Any, str]:
    """The test set's labelled images (qcxr.data.datasets.LabeledImages) from the study the
    run's config names, to check predictions against; (None, why not) when there is none to
    read ("" when the run names no study)."""
    from qcxr.config import task_of
    from qcxr.data.study import has_data, open_study

    if settings is None or not has_data(settings.data):
        return None, ""
    task = task_of(settings)
    study = open_study(settings.data, task)
    if testset not in study.testsets:
        return None, f"test set {testset!r} has no label file in the study; ids not checked"
    files = study.label_files()
    if not files:
        return None, "the study's label files are not found: ids and truth not checked"
    key = (testset, task.name, tuple(task.labels), repr(settings.data), _signature(*files))
    if key not in _REFERENCES:
        while len(_REFERENCES) >= _KEPT:
            del _REFERENCES[next(iter(_REFERENCES))]
        try:
            _REFERENCES[key] = study.dataset(testset)
        except FileNotFoundError as err:
            return None, f"{err}: ids and truth not checked against the label file"
    return _REFERENCES[key], ""


def check_against_labels(
    path: str | Path, ids: list[str], labels: list[str], truth: np.ndarray, reference: Any
) -> list[str]:
    """Predictions must be of images of the test set's label file (`reference`, LabeledImages)
    with the truth that file gives them: an id absent from it, or a "y:" value that differs,
    is an error naming the file, the id and the label. Returns notes (images not scored)."""
    row_of = {image_id: i for i, image_id in enumerate(reference.ids)}
    absent = [i for i in ids if i not in row_of]
    if absent:
        raise ValueError(
            f"{path}: id {absent[0]!r} (row {ids.index(absent[0])}) is not in "
            f"{reference.label_file}, the test set's label file ({len(absent)} of "
            f"{len(ids)} ids are not); predictions must be of the test set's images"
        )
    rows = np.asarray([row_of[i] for i in ids], np.int64)
    for j, name in enumerate(labels):
        if name not in reference.label_names:
            continue
        expected = reference.labels[rows, reference.label_names.index(name)].astype(np.float64)
        differ = ~((expected == truth[:, j]) | (np.isnan(expected) & np.isnan(truth[:, j])))
        if differ.any():
            r = int(np.flatnonzero(differ)[0])
            raise ValueError(
                f"{path}: y:{name} of id {ids[r]!r} (row {r}) is {truth[r, j]:g}, but "
                f"{reference.label_file} gives {expected[r]:g} ({int(differ.sum())} row(s) "
                "differ): the predictions do not match the label file (changed since the "
                "run?); predict again"
            )
    if len(ids) < len(reference.ids):
        return [
            f"{path}: scored on {len(ids)} of the {len(reference.ids)} images of "
            f"{reference.label_file}"
        ]
    return []


def checked_predictions(
    path: str | Path, settings: Config | None = None
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, list[str]]:
    """`read_predictions`, then `check_against_labels` when the run's config (`settings`)
    names a study; the last item are notes (images not scored, checks not made)."""
    ids, labels, probs, truth = read_predictions(path)
    reference, why_not = reference_labels(settings, rundir.testset_of(path))
    if reference is None:
        return ids, labels, probs, truth, [f"{path}: {why_not}"] if why_not else []
    return ids, labels, probs, truth, check_against_labels(path, ids, labels, truth, reference)


def check_run(run_dir: str | Path, settings: Config | None = None) -> list[str]:
    """Check every predictions file of a run as `write_metrics` does; returns the notes."""
    return [
        note
        for path in rundir.prediction_files(run_dir)
        for note in checked_predictions(path, settings)[-1]
    ]
