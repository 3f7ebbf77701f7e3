"""history.csv of a run: one row per train step and one per epoch end.

Columns: epoch, step, train_loss, val_loss, epoch_time.
- Step rows: `epoch` (1-based), `step` (global step count after the update), `train_loss` (mean
  loss of that batch); val_loss and epoch_time empty.
- Epoch rows: `train_loss` is the mean of the epoch's batch losses, `val_loss` the mean loss over
  the validation set, `epoch_time` the seconds the epoch took (training + validation). A row is an
  epoch row exactly when val_loss is set. After a resume, epoch_time of the resumed epoch counts
  only the time since the resume.
Rows are buffered and written before each checkpoint save; on resume, rows beyond the checkpoint's
step are dropped, so a resumed run ends with the same rows as an uninterrupted one.
qcxr.rundir.read_history reads the file back.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from qcxr.rundir import HISTORY_COLUMNS

COLUMNS = HISTORY_COLUMNS


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class History:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pending: list[tuple] = []

    def start(self, keep_through_step: int | None) -> None:
        """A fresh file (None), or the existing one cut after `keep_through_step` (resume)."""
        if keep_through_step is None or not self.path.is_file():
            self.path.write_text(",".join(COLUMNS) + "\n")
            return
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if r and int(r[1]) <= keep_through_step]
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(kept)

    def step(self, epoch: int, step: int, train_loss: float) -> None:
        self._pending.append((epoch, step, train_loss, None, None))

    def epoch(
        self, epoch: int, step: int, train_loss: float, val_loss: float, epoch_time: float
    ) -> None:
        self._pending.append((epoch, step, train_loss, val_loss, epoch_time))

    def flush(self) -> None:
        if not self._pending:
            return
        with self.path.open("a") as f:
            for row in self._pending:
                f.write(",".join(_cell(v) for v in row) + "\n")
        self._pending.clear()
