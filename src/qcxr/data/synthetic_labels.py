"""The label vectors of a synthetic study: real NIH-CXR-LT rows by whole patients, and the
CXR-LT 2023 (MIMIC) labels derived from them.

Label vectors are real: whole patients drawn from the shipped NIH-CXR-LT validation and test
label files, so the long tail and the co-occurrences are those of the benchmark. Labels without
an NIH counterpart (MIMIC-only classes, extra synthetic labels) are drawn at long-tailed
prevalences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qcxr.data.datasets import nih_label_file
from qcxr.labels import CXR19, CXR26, NIH20, Task, canonical, resolve_task

# CXR-LT 2023 (26 classes) in MIMIC spelling; No Finding last as in the challenge files.
MIMIC_26 = (
    "Atelectasis",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "Nodule",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
    "No Finding",
)
MIMIC_ONLY_RATES = {  # labels with no NIH counterpart: no image trace, plausible prevalence
    "Enlarged Cardiomediastinum": 0.03,
    "Fracture": 0.02,
    "Lung Lesion": 0.02,
    "Lung Opacity": 0.12,
    "Pleural Other": 0.01,
    "Support Devices": 0.15,
}
EXTRA_RATE, EXTRA_DECAY = 0.12, 0.8  # extra label k: prevalence 0.12 * 0.8**k (long tail)
MAX_IMAGES_PER_PATIENT = 8  # keeps small splits from being a handful of patients


def real_label_rows() -> pd.DataFrame:
    """The shipped val + test label rows (the pool that synthetic splits are drawn from)."""
    frames = [pd.read_csv(nih_label_file(s), dtype={"subj_id": str}) for s in ("val", "test")]
    return pd.concat(frames, ignore_index=True)


def draw_patients(pool: pd.DataFrame, sizes: list[int], rng: np.random.Generator) -> list[list]:
    """For each requested size, lists of row-index arrays, one per patient; splits are disjoint."""
    groups = pool.groupby("subj_id", sort=True).indices
    subjects = list(groups)
    order = rng.permutation(len(subjects))
    cursor, out = 0, []
    for size in sizes:
        patients, count = [], 0
        while count < size:
            if cursor >= len(order):
                raise ValueError(f"asked for more images than the real label pool holds ({count})")
            rows = groups[subjects[order[cursor]]]
            cursor += 1
            if len(rows) > MAX_IMAGES_PER_PATIENT:
                rows = np.sort(rng.choice(rows, MAX_IMAGES_PER_PATIENT, replace=False))
            rows = rows[: size - count]
            patients.append(rows)
            count += len(rows)
        out.append(patients)
    return out


def nih_findings(source: pd.Series) -> list[str]:
    """The positive NIH labels of a real row (CXR19 order): the findings its image shows."""
    row = source[list(CXR19)].to_numpy()
    return [name for name, value in zip(CXR19, row, strict=True) if value]


@dataclass(frozen=True)
class StudyLabels:
    """What a study is generated for: its label set, the extra synthetic labels among them, and
    whether it needs MIMIC train/val files (any label NIH-CXR-LT lacks)."""

    labels: tuple[str, ...]  # canonical names, the study's qubit order (labels.txt)
    extra_rates: dict[str, float]  # labels with no NIH or CXR-LT 2023 counterpart -> prevalence

    @property
    def mimic_training(self) -> bool:
        return not set(self.labels) <= set(NIH20)

    @property
    def textured(self) -> tuple[str, ...]:
        """Labels with a texture of their own in MIMIC images beyond the NIH findings: the whole
        set in a study that trains on MIMIC, none otherwise."""
        return self.labels if self.mimic_training else ()


def study_labels(task: str | Task = "nih20", extra_labels: int = 0) -> StudyLabels:
    """The label set of a study for `task` plus `extra_labels` generated ones ("Finding 01"...)."""
    base = resolve_task(task).labels
    width = len(str(max(extra_labels, 1)))
    generated = tuple(f"Finding {k + 1:0{width}d}" for k in range(extra_labels))
    clash = sorted(set(generated) & set(base))
    if clash:
        raise ValueError(f"generated extra labels {clash} are already in task labels")
    labels = base + generated
    extras = [n for n in labels if n not in CXR26]
    rates = {name: EXTRA_RATE * EXTRA_DECAY**k for k, name in enumerate(extras)}
    return StudyLabels(labels, rates)


def mimic_labels(
    source: pd.Series, rng: np.random.Generator, extra_rates: dict[str, float] | None = None
) -> dict[str, int]:
    """26-class CXR-LT 2023 labels (MIMIC names), then extra labels, for one real NIH row."""
    out = {"Pleural Effusion" if n == "Effusion" else n: int(source[n]) for n in CXR19}
    for name, rate in MIMIC_ONLY_RATES.items():
        out[name] = int(rng.random() < rate)
    if out["Consolidation"] or out["Infiltration"] or out["Pneumonia"]:
        out["Lung Opacity"] = int(rng.random() < 0.6)
    for name, rate in (extra_rates or {}).items():
        out[name] = int(rng.random() < rate)
    out["No Finding"] = int(not any(out.values()))
    return out


def mimic_findings(
    labels: dict[str, int], source: pd.Series, textured: tuple[str, ...] = ()
) -> list[str]:
    """Labels rendered as textures (canonical names): the NIH findings, plus every other
    positive among `textured` (`StudyLabels.textured`); other positives leave no trace."""
    findings = nih_findings(source)
    if textured:
        skip, wanted = set(findings) | {"No Finding"}, set(textured)
        for name in (canonical(n) for n, v in labels.items() if v):
            if name not in skip and name in wanted:
                findings.append(name)
    return findings
