"""Did a run learn anything? A diagnosis per run and test set, recorded in metrics.json.

A run can finish cleanly and still have learned nothing: frozen features of a random backbone,
for instance, saturate the DQC head's tanh unless `train.standardize_features` is on, and every
prediction is then one constant. Three signals are looked for:

- constant predictions: the standard deviation of a label's probabilities across the test
  images is below `CONSTANT_STD` for every label, or for more than `CONSTANT_SHARE` of them;
- AUROC at chance: the test set's mean AUROC is within `CHANCE_AUROC` of 0.5 (a plain
  threshold, no significance test: on its own it is only a signal);
- a flat validation loss: over the epoch rows of history.csv (at least two), max - min of
  val_loss is at most `FLAT_VAL_LOSS_RTOL` times its largest absolute value.

A test set's model "learned nothing" when its predictions are constant, or when at least two
signals agree (chance AUROC and a flat validation loss). metrics.json's "diagnosis":
{"learned_nothing", "reasons" (of the first test set that learned nothing), "hint",
"testsets": {testset: {"learned_nothing", "reasons", "constant_labels", "mean_auroc"}},
"thresholds"}. `message` turns it into the one line that `qcxr train`, `qcxr evaluate` and
the report show.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from qcxr import rundir
from qcxr.evaluate.predictions import read_predictions

CONSTANT_STD = 1e-6  # a label's probabilities with a smaller std across images are constant
CONSTANT_SHARE = 0.5  # predictions are near-constant when more than this share of labels is
CHANCE_AUROC = 0.02  # |mean AUROC - 0.5| below this is chance
FLAT_VAL_LOSS_RTOL = 1e-4  # val_loss range below this times its size: it never moved

STANDARDIZE_HINT = (
    "with random or frozen features try train.standardize_features: true "
    "(unstandardised features can saturate the DQC's tanh)"
)
GENERAL_HINT = "check the learning rate, the labels and the input features"


def constant_signal(probs: np.ndarray) -> tuple[str | None, int]:
    """(reason or None, number of labels whose probabilities are constant across images)."""
    n_labels = probs.shape[1]
    if probs.shape[0] < 2 or n_labels == 0:
        return None, 0
    constant = int(np.sum(np.std(probs, axis=0) < CONSTANT_STD))
    if constant == n_labels:
        return f"constant predictions (every label's std < {CONSTANT_STD:g})", constant
    if constant > CONSTANT_SHARE * n_labels:
        return (
            f"near-constant predictions ({constant} of {n_labels} labels' std < {CONSTANT_STD:g})",
            constant,
        )
    return None, constant


def chance_signal(mean_auroc: float | None) -> str | None:
    if mean_auroc is None or not math.isfinite(mean_auroc):
        return None
    if abs(mean_auroc - 0.5) < CHANCE_AUROC:
        return f"mean AUROC {mean_auroc:.3f}"
    return None


def flat_val_loss_signal(run_dir: str | Path) -> str | None:
    """A reason when history.csv's validation loss never moved (None without a history)."""
    path = Path(run_dir) / rundir.HISTORY
    if not path.is_file():
        return None
    values = rundir.epoch_rows(path)["val_loss"].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    spread = float(values.max() - values.min())
    if spread <= FLAT_VAL_LOSS_RTOL * max(float(np.abs(values).max()), 1e-12):
        return f"validation loss never moved ({values[-1]:.4f} over {len(values)} epochs)"
    return None


def hint(settings: Any) -> str:
    """The advice for a run that learned nothing, from its config (None: the general hint)."""
    train = getattr(settings, "train", None)
    if train is not None and train.mode == "frozen" and not train.standardize_features:
        return STANDARDIZE_HINT
    return GENERAL_HINT


def diagnose_run(
    run_dir: str | Path, metrics: dict[str, Any], settings: Any = None
) -> dict[str, Any]:
    """The diagnosis of a run from its predictions, history.csv and computed `metrics`
    (write_metrics' result: "testsets" -> {testset: {"mean": {"auroc"}, "predictions"}})."""
    run_dir = Path(run_dir)
    flat = flat_val_loss_signal(run_dir)
    testsets: dict[str, dict[str, Any]] = {}
    for testset, m in metrics.get("testsets", {}).items():
        name = m.get("predictions")
        path = run_dir / name if name else rundir.predictions_path(run_dir, testset)
        _, _, probs, _ = read_predictions(path)
        constant, n_constant = constant_signal(probs)
        mean_auroc = (m.get("mean") or {}).get("auroc")
        chance = chance_signal(mean_auroc)
        reasons = [r for r in (constant, chance, flat) if r]
        testsets[testset] = {
            "learned_nothing": bool(constant) or len(reasons) >= 2,
            "reasons": reasons,
            "constant_labels": n_constant,
            "mean_auroc": mean_auroc,
        }
    failed = [t for t, d in testsets.items() if d["learned_nothing"]]
    return {
        "learned_nothing": bool(failed),
        "reasons": testsets[failed[0]]["reasons"] if failed else [],
        "testsets_learned_nothing": failed,
        "hint": hint(settings) if failed else None,
        "testsets": testsets,
        "thresholds": {
            "constant_std": CONSTANT_STD,
            "constant_share": CONSTANT_SHARE,
            "chance_auroc": CHANCE_AUROC,
            "flat_val_loss_rtol": FLAT_VAL_LOSS_RTOL,
        },
    }


def message(diagnosis: dict[str, Any] | None) -> str | None:
    """ "the model learned nothing: <reasons>; <hint>", or None when it learned something."""
    if not diagnosis or not diagnosis.get("learned_nothing"):
        return None
    reasons = ", ".join(diagnosis.get("reasons") or [])
    where = diagnosis.get("testsets_learned_nothing") or []
    on = f" (test set {', '.join(where)})" if where else ""
    return f"the model learned nothing{on}: {reasons}; {diagnosis.get('hint') or GENERAL_HINT}"


def read_diagnosis(run_dir: str | Path) -> dict[str, Any] | None:
    """metrics.json's "diagnosis" of a run, None when it has none (or no readable file)."""
    path = Path(run_dir) / rundir.METRICS
    try:
        return rundir.read_json(path).get("diagnosis") if path.is_file() else None
    except (OSError, ValueError):
        return None
