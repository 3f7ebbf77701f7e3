"""A synthetic study in the real on-disk formats: NIH-CXR-LT layout plus a MIMIC-CXR-LT external set.

Label vectors are real NIH-CXR-LT rows (qcxr.data.synthetic_labels); images are chest-like
renderings in which each finding leaves a label's texture (qcxr.data.render), so a linear head
on pooled ResNet50 features can learn them; rare labels stay hard because they have few
examples. The external set is rendered with a shifted appearance (gamma, contrast, noise, a
wider field of view, non-square JPEGs) and includes lateral views that its metadata marks for
filtering.

Label sets beyond NIH-CXR-LT's 20 classes (cxr26, explicit lists, `extra_labels`): the study also
gets MIMIC-CXR-LT train and val files in the CXR-LT 2023 layout (the test file's), whose columns
are the 26 classes plus any extra synthetic labels. Labels without an NIH counterpart are drawn
at long-tailed prevalences and, when in the study's label set, leave a texture of their own too,
so every label of its set can be learned.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from qcxr.data.datasets import StudyPaths, study_paths
from qcxr.data.render import Renderer
from qcxr.data.synthetic_labels import (
    MIMIC_26,
    StudyLabels,
    draw_patients,
    mimic_findings,
    mimic_labels,
    nih_findings,
    real_label_rows,
    study_labels,
)
from qcxr.labels import Task

MIMIC_SUBJECT_BASE = {"test": 10_000_000, "train": 11_000_000, "val": 12_000_000}
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
LATERAL_FRACTION = 0.15


def write_nih_split(
    pool: pd.DataFrame,
    patients: list[np.ndarray],
    first_subject: int,
    csv_path: Path,
    image_dir: Path,
    renderer: Renderer,
    rng: np.random.Generator,
    progress: tqdm,
) -> int:
    """Write one NIH-CXR-LT split; returns the next free subject number."""
    columns = list(pool.columns)  # id, 19 labels in the real order, No Finding, subj_id
    label_cols = columns[1:-1]
    rows = []
    subject = first_subject
    for patient in patients:
        for k, index in enumerate(patient):
            source = pool.iloc[index]
            image_id = f"{subject:08d}_{k:03d}.png"
            findings = nih_findings(source)
            pixels = renderer.render(findings, rng)
            Image.fromarray(pixels, "L").save(image_dir / image_id, compress_level=1)
            rows.append([image_id, *(int(source[c]) for c in label_cols), f"{subject:08d}"])
            progress.update()
        subject += 1
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return subject


def dicom_id(rng: np.random.Generator) -> str:
    parts = rng.integers(0, 2**32, size=5, dtype=np.uint64)
    return "-".join(f"{int(p):08x}" for p in parts)


def metadata_row(dicom: str, subject: int, study: int, view: str, pixels: np.ndarray, rng):
    is_lateral = view in ("LATERAL", "LL")
    return {
        "dicom_id": dicom,
        "subject_id": subject,
        "study_id": study,
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "ViewPosition": view,
        "Rows": pixels.shape[0],
        "Columns": pixels.shape[1],
        "StudyDate": 21000101 + int(rng.integers(0, 1000)),
        "StudyTime": f"{int(rng.integers(0, 240000)):06d}.000",
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
        "ViewCodeSequence_CodeMeaning": "lateral"
        if is_lateral
        else ("postero-anterior" if view == "PA" else "antero-posterior"),
        "PatientOrientationCodeSequence_CodeMeaning": "Erect",
    }


@dataclass
class MimicWriter:
    """Writes MIMIC-CXR-JPG images and CXR-LT 2023 label rows, split by split."""

    pool: pd.DataFrame
    paths: StudyPaths
    renderers: tuple[Renderer, Renderer]  # frontal, lateral
    labels: StudyLabels
    progress: tqdm
    meta_rows: list[dict] = field(default_factory=list)

    def view_image(self, view: str, findings: list[str], rng: np.random.Generator) -> np.ndarray:
        is_lateral = view in ("LATERAL", "LL")
        renderer = self.renderers[1] if is_lateral else self.renderers[0]
        return renderer.render(
            findings,
            rng,
            scale=(0.78, 0.9),
            lateral=is_lateral,
            noise=0.045,
            gamma=rng.uniform(0.7, 0.9),
            contrast=rng.uniform(1.1, 1.3),
        )

    def view(self, view: str, findings: list[str], ids: tuple[int, int], rng) -> tuple[str, Path]:
        """Render and save one view of a study; its dicom_id and path under the MIMIC root."""
        subject, study = ids
        pixels = self.view_image(view, findings, rng)
        dicom = dicom_id(rng)
        rel = Path("files") / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        (self.paths.mimic_root / rel).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").save(self.paths.mimic_root / rel / f"{dicom}.jpg", quality=90)
        self.meta_rows.append(metadata_row(dicom, subject, study, view, pixels, rng))
        return dicom, rel / f"{dicom}.jpg"

    def split(self, patients: list[np.ndarray], rng: np.random.Generator, base: int) -> list:
        """Label rows of one split (its metadata rows go to `meta_rows`)."""
        extra = self.labels.extra_rates
        columns = [*MIMIC_26, *extra]
        rows = []
        subject = base + int(rng.integers(0, 100_000))
        study = 50_000_000 + int(rng.integers(0, 100_000))
        for patient in patients:
            subject += int(rng.integers(1, 50))
            for index in patient:
                study += int(rng.integers(1, 50))
                source = self.pool.iloc[index]
                labels = mimic_labels(source, rng, extra)
                findings = mimic_findings(labels, source, self.labels.textured)
                views = ["PA" if rng.random() < 0.6 else "AP"]
                if rng.random() < LATERAL_FRACTION:
                    views.append("LATERAL" if rng.random() < 0.7 else "LL")
                for view in views:
                    dicom, path = self.view(view, findings, (subject, study), rng)
                    ids = {"dicom_id": dicom, "subject_id": subject, "study_id": study}
                    rows.append({**ids, **{n: labels[n] for n in columns}, "path": str(path)})
                self.progress.update()
        return rows


def write_mimic(
    pool: pd.DataFrame,
    splits: dict[str, list[np.ndarray]],
    paths: StudyPaths,
    image_size: int,
    seed: int,
    progress: tqdm,
    labels: StudyLabels | None = None,
) -> None:
    """MIMIC-CXR-JPG layout: a CXR-LT 2023 label file per split (test: the external set) and
    one metadata file with laterals for all of them."""
    labels = labels or study_labels()
    height, width = image_size, int(round(image_size * 1.15))
    textures = labels.textured
    renderers = (Renderer(height, width, seed, textures), Renderer(height, height, seed, textures))
    writer = MimicWriter(pool, paths, renderers, labels, progress)
    for k, (split, patients) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, 26] if split == "test" else [seed, 26, k])
        rows = writer.split(patients, rng, MIMIC_SUBJECT_BASE[split])
        pd.DataFrame(rows).to_csv(paths.mimic_split_csv[split], index=False)
    pd.DataFrame(writer.meta_rows, columns=list(METADATA_COLUMNS)).to_csv(
        paths.mimic_metadata, index=False
    )


MARKER = "synthetic.json"  # at a synthetic study's root: what wrote it (reports say "synthetic")


def write_synthetic_marker(root: Path, fmt: str, seed: int, counts: dict[str, int]) -> Path:
    """<root>/synthetic.json: {"synthetic": true, "format", "seed", "counts"}."""
    marker = {"synthetic": True, "format": fmt, "seed": seed, "counts": counts}
    path = Path(root) / MARKER
    path.write_text(json.dumps(marker, indent=2) + "\n")
    return path


def generate_study(
    root: str | Path,
    *,
    n_train: int = 800,
    n_val: int = 200,
    n_test: int = 400,
    n_mimic: int = 300,
    image_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    task: str | Task = "nih20",
    extra_labels: int = 0,
) -> StudyPaths:
    """Write a synthetic study at `root` (layout of `study_paths`); deterministic for a seed.

    `n_mimic` counts external studies: each has one frontal image and, for about 15% of them,
    a lateral one too (filtered by the metadata, as the paper filtered MIMIC's test set).
    A `task` with labels NIH-CXR-LT lacks, or `extra_labels` > 0 (synthetic labels "Finding
    01", ... appended to the task's), adds MIMIC train and val files of n_train and n_val
    studies; labels.txt lists the study's label set either way.
    """
    labels = study_labels(task, extra_labels)
    paths = study_paths(root)
    paths.nih_images.mkdir(parents=True, exist_ok=True)
    paths.mimic_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = real_label_rows()
    splits = {"train": n_train, "val": n_val, "test": n_test}
    mimic_sizes = {"test": n_mimic}
    if labels.mimic_training:
        mimic_sizes.update(train=n_train, val=n_val)
    drawn = draw_patients(pool, [*splits.values(), *mimic_sizes.values()], rng)
    renderer = Renderer(image_size, image_size, seed)
    subject = 1
    total = sum(splits.values()) + sum(mimic_sizes.values())
    with tqdm(total=total, desc="synth", unit="img", disable=not progress) as bar:
        for (split, _), patients in zip(splits.items(), drawn[:3], strict=True):
            split_rng = np.random.default_rng([seed, len(split), ord(split[0])])
            subject = write_nih_split(
                pool,
                patients,
                subject,
                paths.nih_csv[split],
                paths.nih_images,
                renderer,
                split_rng,
                bar,
            )
        mimic = dict(zip(mimic_sizes, drawn[3:], strict=True))
        write_mimic(pool, mimic, paths, image_size, seed, bar, labels)
    paths.labels_file.write_text("".join(f"{name}\n" for name in labels.labels))
    counts = {**splits, **{f"mimic_{s}": n for s, n in mimic_sizes.items()}}
    write_synthetic_marker(paths.root, "nih-cxr-lt", seed, counts)
    return paths
