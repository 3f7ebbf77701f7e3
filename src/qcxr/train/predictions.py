"""predictions-<testset>.parquet (qcxr.rundir.predictions_path; docs/ARCHITECTURE.md): "id", then "p:L" and "y:L" for each label L."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def predictions_frame(
    ids: list[str], probabilities: np.ndarray, labels: np.ndarray, names: list[str]
) -> pd.DataFrame:
    if probabilities.shape != labels.shape or len(ids) != len(labels):
        raise ValueError(
            f"predictions: {len(ids)} ids, probabilities {probabilities.shape}, "
            f"labels {labels.shape} do not match"
        )
    columns: dict[str, object] = {"id": list(ids)}
    for i, name in enumerate(names):
        columns[f"p:{name}"] = probabilities[:, i].astype(np.float32)
        columns[f"y:{name}"] = labels[:, i].astype(np.float32)
    return pd.DataFrame(columns)


def write_predictions(
    path: str | Path,
    ids: list[str],
    probabilities: np.ndarray,
    labels: np.ndarray,
    names: list[str],
) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".parquet.tmp")
    predictions_frame(ids, probabilities, labels, names).to_parquet(tmp, index=False)
    tmp.replace(path)  # a reader never sees half a file
    return path
