"""Patient splits of a label table: drawn when the table has none, and checked either way.

A split drawn here is a function of the set of patients, the seed and the fractions only:
each patient's place in the order is the sha256 of (seed, patient), so shuffling the file's
rows, or adding a patient, moves no other patient to another split. Fractions are over
patients (every image of a patient goes where the patient goes), so no patient is ever in two
splits; `check_disjoint` refuses a table whose own split column or files put one in two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def patient_order(patients: list[str], seed: int) -> list[str]:
    """The patients in the seeded order (independent of the order they are given in)."""

    def key(patient: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"{seed}\0{patient}".encode()).digest(), patient

    return sorted(set(patients), key=key)


def patient_counts(n_patients: int, shares: list[float], where: str) -> list[int]:
    """How many patients each split gets: largest remainders of `shares` (renormalised), each
    split at least one patient; fewer patients than splits is an error naming `where`."""
    if n_patients < len(shares):
        raise ValueError(
            f"{where}: {n_patients} patient(s) cannot be split into {len(shares)} splits; "
            "every split needs at least one patient"
        )
    weights = np.asarray(shares, float) / float(np.sum(shares))
    exact = weights * n_patients
    counts = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - counts), kind="stable")
    counts[by_remainder[: n_patients - int(counts.sum())]] += 1
    for k in np.flatnonzero(counts == 0):  # a tiny share still gets one patient
        counts[int(np.argmax(counts))] -= 1
        counts[k] = 1
    return counts.tolist()


def draw_splits(
    patients: np.ndarray, names: list[str], shares: list[float], seed: int, where: str
) -> np.ndarray:
    """The split (one of `names`) of every row, drawn by patient with `shares` of patients."""
    order = patient_order([str(p) for p in patients], seed)
    counts = patient_counts(len(order), shares, where)
    edges = np.cumsum(counts)
    split_of = {p: names[int(np.searchsorted(edges, k, side="right"))] for k, p in enumerate(order)}
    return np.array([split_of[str(p)] for p in patients], dtype=object)


def drawn_shares(fractions: tuple[float, float, float], names: list[str]) -> list[float]:
    """data.split_fractions of `names` (train first), renormalised over them."""
    share = dict(zip(SPLITS, fractions, strict=True))
    total = sum(share[n] for n in names)
    return [share[n] / total for n in names]


def check_disjoint(rows: pd.DataFrame, line_of: Callable[[str, int], str]) -> None:
    """No patient in two splits. `rows` has columns patient, split, file, row (kept images);
    an offender is an error naming the patient, its splits, and a file and line of each
    (`line_of(file, row)`)."""
    spread = rows.groupby("patient", sort=False)["split"].nunique()
    bad = spread[spread > 1]
    if bad.empty:
        return
    patient = bad.index[0]
    mine = rows[rows["patient"] == patient].drop_duplicates("split")
    where = "; ".join(
        f"{split} in {file} {line_of(file, int(row))}"
        for split, file, row in zip(mine["split"], mine["file"], mine["row"], strict=True)
    )
    raise ValueError(
        f"patient {patient!r} is in {len(mine)} splits ({where}); {len(bad)} patient(s) are "
        "in more than one split: a patient's images must all be in one split"
    )
