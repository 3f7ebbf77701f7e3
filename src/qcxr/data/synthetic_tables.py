"""Synthetic studies in a researcher's own layouts: a generic label table and CheXpert.

Label vectors come from real NIH-CXR-LT patients (qcxr.data.synthetic_labels), images from the
synthetic renderer (qcxr.data.render): every finding leaves a texture, so a model can learn the
labels. `write_table_study` writes `labels.csv` (path, patient_id, view, the task's labels, a few
blanks) with no split column, so that a run draws patient splits; `write_chexpert_study` writes
the CheXpert-v1.0-small layout (train.csv and valid.csv in the real header, 1.0 / 0.0 / -1.0 /
blank, lateral views). Both are deterministic for a seed and mark their root with
synthetic.json; they return the settings a run on them needs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from qcxr.config import TABLE_FORMATS
from qcxr.data.render import Renderer
from qcxr.data.synthetic import write_synthetic_marker
from qcxr.data.synthetic_labels import (
    StudyLabels,
    mimic_findings,
    mimic_labels,
    real_label_rows,
    study_labels,
)
from qcxr.labels import LABEL_SETS, Task, canonical, resolve_task

CHEXPERT_DIR = "CheXpert-v1.0-small"
CHEXPERT_OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS)
CHEXPERT_TASK = Task("chexpert", tuple(canonical(n) for n in CHEXPERT_OBSERVATIONS))
TABLE_BLANK = 0.03  # share of a table's label entries left blank
# CheXpert train.csv (its labeller's output): a positive is sometimes uncertain (-1); a negative
# is mostly "not mentioned" (blank), sometimes 0, rarely -1. valid.csv (radiologists) is 0/1.
UNCERTAIN_POSITIVE, BLANK_NEGATIVE, UNCERTAIN_NEGATIVE = 0.15, 0.5, 0.05
LATERAL_SHARE = 0.15  # studies with a lateral view besides the frontal one
MAX_IMAGES_PER_PATIENT = 3


def patient_rows(pool: pd.DataFrame, sizes: list[int], rng: np.random.Generator) -> list[list]:
    """For each size, that many pool rows as lists per patient (1-3 rows each, whole real
    patients, no patient in two lists)."""
    groups = pool.groupby("subj_id", sort=True).indices
    subjects = list(groups)
    order = iter(rng.permutation(len(subjects)))
    out = []
    for size in sizes:
        patients, count = [], 0
        while count < size:
            rows = groups[subjects[next(order)]]
            take = min(int(rng.integers(1, MAX_IMAGES_PER_PATIENT + 1)), len(rows), size - count)
            patients.append(np.sort(rng.choice(rows, take, replace=False)))
            count += take
        out.append(patients)
    return out


def image_labels(
    source: pd.Series, labels: StudyLabels, rng: np.random.Generator
) -> tuple[dict[str, int], list[str]]:
    """One image's labels (canonical names: the 26 CXR-LT classes and any extra ones) and the
    findings its rendering shows."""
    drawn = mimic_labels(source, rng, labels.extra_rates)
    findings = mimic_findings(drawn, source, labels.textured)
    return {canonical(name): value for name, value in drawn.items()}, findings


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def table_rows(root: Path, labels: StudyLabels, n_images: int, size: int, seed: int, bar) -> list:
    """Render a table study's images under root/images; its label rows."""
    pool = real_label_rows()
    rng = np.random.default_rng([seed, 15])
    renderer = Renderer(size, size, seed, labels.labels)
    rows = []
    for p, patient in enumerate(patient_rows(pool, [n_images], rng)[0], start=1):
        for k, index in enumerate(patient, start=1):
            values, findings = image_labels(pool.iloc[index], labels, rng)
            name = f"p{p:05d}_{k}.png"
            Image.fromarray(renderer.render(findings, rng), "L").save(
                root / "images" / name, compress_level=1
            )
            cells = ["" if rng.random() < TABLE_BLANK else str(values[n]) for n in labels.labels]
            rows.append([name, f"p{p:05d}", "PA" if rng.random() < 0.6 else "AP", *cells])
            bar.update()
    return rows


def write_table(root: Path, task: Task, counts: dict[str, int], size: int, seed: int, bar) -> dict:
    """labels.csv and images/ of a table study; the settings a run on it needs."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels = study_labels(task)
    rows = table_rows(root, labels, sum(counts.values()), size, seed, bar)
    csv_path = root / "labels.csv"
    write_csv(csv_path, ["path", "patient_id", "view", *labels.labels], rows)
    return {
        "data.format": "table",
        "data.csv": str(csv_path),
        "data.images": str(root / "images"),
        "data.patient_column": "patient_id",
        "data.view_column": "view",
    }


def chexpert_task(task: Task) -> Task:
    """The task a CheXpert study is read with: `task` when CheXpert has all its labels, else
    the 14 observations."""
    return task if set(task.labels) <= set(CHEXPERT_TASK.labels) else CHEXPERT_TASK


def chexpert_value(value: int, rng: np.random.Generator, labeller: bool) -> str:
    """A CheXpert cell for a 0/1 truth: the labeller's 1.0 / -1.0 / 0.0 / blank in train.csv,
    the radiologists' 1.0 / 0.0 in valid.csv."""
    if not labeller:
        return "1.0" if value else "0.0"
    draw = rng.random()
    if value:
        return "-1.0" if draw < UNCERTAIN_POSITIVE else "1.0"
    if draw < BLANK_NEGATIVE:
        return ""
    return "-1.0" if draw < BLANK_NEGATIVE + UNCERTAIN_NEGATIVE else "0.0"


def chexpert_study_rows(
    where: tuple[Path, str], values: dict[str, int], findings: list[str], renderer, rng
) -> list[list[str]]:
    """One study: its frontal view (and a lateral one for some), rendered; their rows."""
    base, rel = where
    labeller = "/train/" in rel
    cells = [chexpert_value(values[canonical(n)], rng, labeller) for n in CHEXPERT_OBSERVATIONS]
    sex, age = ("Male", "Female")[int(rng.integers(2))], str(int(rng.integers(18, 91)))
    views = [("frontal", "PA" if rng.random() < 0.5 else "AP")]
    if rng.random() < LATERAL_SHARE:
        views.append(("lateral", ""))
    rows = []
    for j, (view, position) in enumerate(views, start=1):
        path = f"{rel}/view{j}_{view}.jpg"
        pixels = renderer.render(findings, rng, lateral=view == "lateral")
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").save(base / path, quality=90)
        rows.append([path, sex, age, view.title(), position, *cells])
    return rows


def write_chexpert(root: Path, task: Task, counts: dict[str, int], size: int, seed: int, bar):
    """CheXpert-v1.0-small/{train,valid}.csv and their images; the settings a run needs.
    train.csv holds the train and test images (the test split is drawn from it by patient)."""
    base = root / CHEXPERT_DIR
    labels = StudyLabels(CHEXPERT_TASK.labels, {})
    textured = tuple(n for n in CHEXPERT_TASK.labels if n != "No Finding")
    renderer = Renderer(size, int(round(size * 0.85)), seed, textured)
    pool = real_label_rows()
    rng = np.random.default_rng([seed, 15, 14])
    sizes = [counts["train"] + counts["test"], counts["val"]]
    patient = 0
    files = {}
    for name, patients in zip(("train", "valid"), patient_rows(pool, sizes, rng), strict=True):
        rows = []
        for rows_of_patient in patients:
            patient += 1
            for k, index in enumerate(rows_of_patient, start=1):
                values, findings = image_labels(pool.iloc[index], labels, rng)
                rel = f"{CHEXPERT_DIR}/{name}/patient{patient:05d}/study{k}"
                rows += chexpert_study_rows((root, rel), values, findings, renderer, rng)
                bar.update()
        files[name] = base / f"{name}.csv"
        write_csv(files[name], list(CHEXPERT_HEADER), rows)
    return {
        "data.format": "chexpert",
        "data.csv": {"train": str(files["train"]), "val": str(files["valid"])},
        "data.images": str(root),
    }


def write_table_study(
    root: str | Path,
    *,
    fmt: str,
    task: str | Task = "cxr8",
    n_train: int,
    n_val: int,
    n_test: int,
    image_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write a `table` or `chexpert` study at `root`; the settings a run on it needs (data.*,
    data.split_fractions from the counts, task and labels).

    Counts are frontal images: a table study has them all in labels.csv (split by patient at
    read time, so splits hold about, not exactly, these counts); a CheXpert study has the
    val images in valid.csv and the train and test images in train.csv, plus laterals. A
    CheXpert study renders all 13 findings and is read with `task` when CheXpert has all its
    labels, else with the 14 observations ("chexpert").
    """
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"unknown synthetic table format {fmt!r}; choose table or chexpert")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if min(counts.values()) < 1:
        raise ValueError(f"every split needs at least one image, got {counts}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    task = resolve_task(task)
    with tqdm(total=sum(counts.values()), desc="synth", unit="img", disable=not progress) as bar:
        if fmt == "table":
            settings = write_table(root, task, counts, image_size, seed, bar)
        else:
            task = chexpert_task(task)
            settings = write_chexpert(root, task, counts, image_size, seed, bar)
    write_synthetic_marker(root, fmt, seed, counts)
    total = sum(counts.values())
    settings["data.split_fractions"] = [counts[s] / total for s in ("train", "val", "test")]
    settings["task"] = task.name
    settings["labels"] = [] if LABEL_SETS.get(task.name) == list(task.labels) else list(task.labels)
    return settings
