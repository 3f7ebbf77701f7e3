"""history.csv of a run: one row per train step and one per epoch end.

Columns: epoch, step, train_loss, val_loss, epoch_time, val_auroc.
- Step rows: `epoch` (1-based), `step` (global step count after the update), `train_loss` (mean
  loss of that batch); the other columns empty.
- Epoch rows: `train_loss` is the mean of the epoch's batch losses, `val_loss` the mean loss over
  the validation set, `epoch_time` the seconds the epoch took (training + validation),
  `val_auroc` the mean over labels of the validation AUROC (`mean_auroc`). A row is an epoch row
  exactly when val_loss is set. After a resume, epoch_time of the resumed epoch counts only the
  time since the resume.
Rows are buffered and written before each checkpoint save; on resume, rows beyond the checkpoint's
step are dropped, so a resumed run ends with the same rows as an uninterrupted one. A file
written before val_auroc existed keeps its rows on resume, that column empty in them.
qcxr.rundir.read_history reads the file back.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from qcxr.rundir import HISTORY_COLUMNS

COLUMNS = HISTORY_COLUMNS


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    group_rank = starts + (sizes + 1) / 2.0
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat(group_rank, sizes)
    return ranks


def label_auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """AUROC of one label over its known rows (truth not NaN); NaN when they hold one class."""
    known = np.isfinite(truth)
    scores, positive = np.asarray(scores, np.float64)[known], truth[known] > 0.5
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mann-Whitney: AUROC = (rank sum of positives - its minimum) / (positives x negatives)
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def mean_auroc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over labels of the per-label AUROC of (N, n) probabilities against (N, n) labels
    (NaN: unknown, left out of that label only); labels with one class among their known rows
    are skipped; NaN when every label is."""
    values = [label_auroc(probabilities[:, i], labels[:, i]) for i in range(labels.shape[1])]
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def _kept_rows(path: Path, keep_through_step: int) -> list[list[str]]:
    """Rows of an existing history up to a step, laid out in today's COLUMNS (a column the file
    lacks is empty)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header = rows[0]
    where = {name: header.index(name) for name in COLUMNS if name in header}
    kept = []
    for row in rows[1:]:
        if row and int(row[where["step"]]) <= keep_through_step:
            kept.append(
                [row[where[c]] if c in where and where[c] < len(row) else "" for c in COLUMNS]
            )
    return kept


class History:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pending: list[tuple] = []

    def start(self, keep_through_step: int | None) -> None:
        """A fresh file (None), or the existing one cut after `keep_through_step` (resume)."""
        if keep_through_step is None or not self.path.is_file():
            self.path.write_text(",".join(COLUMNS) + "\n")
            return
        kept = _kept_rows(self.path, keep_through_step)
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(kept)

    def step(self, epoch: int, step: int, train_loss: float) -> None:
        self._pending.append((epoch, step, train_loss, None, None, None))

    def epoch(
        self,
        epoch: int,
        step: int,
        train_loss: float,
        val_loss: float,
        epoch_time: float,
        val_auroc: float = math.nan,
    ) -> None:
        self._pending.append((epoch, step, train_loss, val_loss, epoch_time, val_auroc))

    def flush(self) -> None:
        if not self._pending:
            return
        with self.path.open("a") as f:
            for row in self._pending:
                f.write(",".join(_cell(v) for v in row) + "\n")
        self._pending.clear()
