"""A synthetic study in the real on-disk formats: NIH-CXR-LT layout plus a MIMIC-CXR-LT external set.

Label vectors are real: whole patients drawn from the shipped NIH-CXR-LT validation and test
label files, so the long tail and the co-occurrences are those of the benchmark. Images are
grayscale chest-like renderings; each finding adds a patch of a label-specific texture
(grating, checker, dot lattice or rings, at a label-specific frequency and orientation) whose
position, size, amplitude, frequency and angle vary. Textures survive global average pooling of
a CNN, even one with random weights, so a linear head on pooled ResNet50 features can learn
them; rare labels stay hard because they have few examples. The external set is rendered with a
shifted appearance (gamma, contrast, noise, a wider field of view, non-square JPEGs) and includes
lateral views that its metadata marks for filtering.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from qcxr.data.datasets import nih_label_file
from qcxr.labels import CXR19

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
MAX_IMAGES_PER_PATIENT = 8  # keeps small splits from being a handful of patients
LATERAL_FRACTION = 0.15
PATCHES_PER_FINDING = 2
NIH_LABEL_STRENGTH = 0.35  # texture amplitude in [0, 1] intensity units


@dataclass(frozen=True)
class Texture:
    family: str  # grating | checker | dots | rings
    cycles: float  # cycles per image width
    angle: float  # degrees


def label_textures() -> dict[str, Texture]:
    """One distinct texture per NIH label (CXR19 order)."""
    specs = [  # mid frequencies (16-36 cycles) survive a random ResNet50 best
        ("grating", 24, 0),
        ("checker", 12, 0),
        ("grating", 22, 45),
        ("grating", 26, 135),
        ("checker", 8, 45),
        ("checker", 26, 0),
        ("grating", 30, 90),
        ("grating", 20, 70),
        ("checker", 18, 45),
        ("grating", 36, 0),
        ("dots", 18, 0),
        ("rings", 30, 0),
        ("grating", 40, 45),
        ("grating", 16, 120),
        ("dots", 24, 45),
        ("dots", 32, 20),
        ("grating", 32, 160),
        ("rings", 20, 0),
        ("rings", 12, 0),
    ]
    return {name: Texture(*spec) for name, spec in zip(CXR19, specs, strict=True)}


@dataclass(frozen=True)
class StudyPaths:
    root: Path
    nih_dir: Path
    nih_images: Path
    nih_csv: dict[str, Path]  # split -> label file (train, val, test)
    mimic_root: Path
    mimic_csv: Path
    mimic_metadata: Path


def study_paths(root: str | Path) -> StudyPaths:
    """The paths of a study at `root` in the synthetic (= real) layout; nothing is checked."""
    root = Path(root)
    nih, mimic = root / "nih", root / "mimic"
    return StudyPaths(
        root=root,
        nih_dir=nih,
        nih_images=nih / "images",
        nih_csv={
            s: nih / f"miccai2023_nih-cxr-lt_labels_{s}.csv" for s in ("train", "val", "test")
        },
        mimic_root=mimic,
        mimic_csv=mimic / "cxr-lt-2023_mimic_test.csv",
        mimic_metadata=mimic / "mimic-cxr-2.0.0-metadata.csv",
    )


# ---------------------------------------------------------------- label sampling


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


# ---------------------------------------------------------------- rendering


class Renderer:
    """Vectorised chest-like renderings at a fixed size, one call per image.

    Anatomy and the smooth background field come from small banks drawn once per renderer
    (its own seed) and are shifted per image: rendering then costs little more than the noise.
    """

    BANK = 16  # anatomy variants per (view, field of view)

    def __init__(self, height: int, width: int, seed: int = 0):
        self.height, self.width = height, width
        # x in [-w/h, w/h] so shapes stay round on non-square images; y in [-1, 1].
        aspect = width / height
        self.y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        self.x = np.linspace(-aspect, aspect, width, dtype=np.float32)[None, :]
        self.textures = label_textures()
        self.seed = seed
        self.banks: dict[tuple, list[tuple[float, np.ndarray]]] = {}
        field_rng = np.random.default_rng([seed, 1])
        coarse = field_rng.standard_normal((2 * height // 16 + 2, 2 * width // 16 + 2))
        self.field = np.asarray(
            Image.fromarray(coarse.astype(np.float32), "F").resize(
                (2 * width, 2 * height), Image.Resampling.BICUBIC
            )
        )

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, sharp: float) -> np.ndarray:
        e = ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2
        return np.clip((1.0 - e) * sharp, 0.0, 1.0)

    def anatomy(self, rng: np.random.Generator, s: float, lateral: bool) -> np.ndarray:
        """One chest-like rendering at field-of-view scale `s` (no noise, no findings)."""
        cx = rng.uniform(-0.04, 0.04)
        body = self.ellipse(cx, 0.05, 0.86 * s, 1.02 * s, 6.0)
        if lateral:
            lungs = self.ellipse(cx + 0.05, -0.02, 0.45 * s, 0.55 * s, 4.0)
            heart = self.ellipse(cx - 0.2 * s, 0.3 * s, 0.3 * s, 0.25 * s, 4.0)
            spine = np.exp(-(((self.x - cx - 0.55 * s) / 0.09) ** 2)) * body
        else:
            lungs = self.ellipse(cx - 0.37 * s, -0.02, 0.27 * s, 0.55 * s, 4.0)
            lungs += self.ellipse(cx + 0.37 * s, -0.02, 0.27 * s, 0.55 * s, 4.0)
            heart_rx = 0.25 * s * rng.uniform(0.9, 1.1)
            heart = self.ellipse(cx + 0.1 * s, 0.25 * s, heart_rx, 0.27 * s, 4.0)
            spine = np.exp(-(((self.x - cx) / 0.07) ** 2)) * body
        phase = rng.uniform(0, 2 * np.pi)
        ribs = np.cos(2 * np.pi * 4.5 * (self.y / s) + 1.5 * self.x**2 + phase)
        image = 0.08 + 0.55 * body + 0.12 * spine
        image += lungs * (rng.uniform(-0.33, -0.25) + 0.04 * ribs) * (1.0 - heart) + 0.12 * heart
        return image.astype(np.float32)

    def bank(self, scale: tuple[float, float], lateral: bool) -> list[tuple[float, np.ndarray]]:
        key = (scale, lateral)
        if key not in self.banks:
            rng = np.random.default_rng([self.seed, 2, int(lateral), int(1000 * scale[0])])
            scales = rng.uniform(*scale, size=self.BANK)
            self.banks[key] = [(float(s), self.anatomy(rng, float(s), lateral)) for s in scales]
        return self.banks[key]

    def texture(self, spec: Texture, u: np.ndarray, v: np.ndarray, cycles: float, angle: float):
        """Zero-ish-mean texture in [-1, 1] on local coordinates u, v (image-width units)."""
        k = 2 * np.pi * cycles
        a = np.deg2rad(angle)
        p, q = u * np.cos(a) + v * np.sin(a), -u * np.sin(a) + v * np.cos(a)
        if spec.family == "grating":
            return np.cos(k * p)
        if spec.family == "checker":
            return np.sign(np.cos(k * p) * np.cos(k * q))
        if spec.family == "dots":
            return 3.0 * np.maximum(np.cos(k * p) * np.cos(k * q), 0.0) ** 3 - 0.45
        return np.cos(k * np.sqrt(p * p + q * q))  # rings

    def add_finding(
        self, image: np.ndarray, name: str, rng: np.random.Generator, scale: float, strength: float
    ) -> None:
        spec = self.textures[name]
        radius = rng.uniform(0.2, 0.34) * scale
        cx = rng.choice([-1, 1]) * rng.uniform(0.15, 0.55) * scale
        cy = rng.uniform(-0.45, 0.4) * scale
        h, w = self.height, self.width
        # Work on the bounding box only: findings are small.
        to_row = (h - 1) / 2
        r0, r1 = (int(max(0, math.floor((c + 1) * to_row))) for c in (cy - radius, cy + radius))
        r1 = min(h, int(math.ceil((cy + radius + 1) * to_row)) + 1)
        aspect = w / h
        to_col = (w - 1) / (2 * aspect)
        c0 = int(max(0, math.floor((cx - radius + aspect) * to_col)))
        c1 = min(w, int(math.ceil((cx + radius + aspect) * to_col)) + 1)
        if r1 <= r0 or c1 <= c0:
            return
        y, x = self.y[r0:r1] - cy, self.x[:, c0:c1] - cx
        window = np.clip(1.0 - (x * x + y * y) / radius**2, 0.0, 1.0) ** 2
        # Local coordinates in units of the image width, so cycles are per image width.
        width_units = 2 * aspect
        cycles = spec.cycles * rng.uniform(0.9, 1.1) * scale
        angle = spec.angle + rng.uniform(-10, 10)
        pattern = self.texture(spec, x / width_units, y / width_units, cycles, angle)
        amplitude = strength * rng.uniform(0.6, 1.0)
        image[r0:r1, c0:c1] += amplitude * window * (pattern + 0.3)

    def render(
        self,
        findings: list[str],
        rng: np.random.Generator,
        *,
        scale: tuple[float, float] = (0.93, 1.05),
        lateral: bool = False,
        noise: float = 0.02,
        gamma: float = 1.0,
        contrast: float = 1.0,
        strength: float = NIH_LABEL_STRENGTH,
    ) -> np.ndarray:
        """uint8 (height, width) rendering with the given findings."""
        h, w = self.height, self.width
        s, base = self.bank(scale, lateral)[int(rng.integers(self.BANK))]
        dy, dx = (int(v) for v in rng.integers(-h // 40, h // 40 + 1, size=2))
        image = np.roll(base, (dy, dx), axis=(0, 1)) * np.float32(rng.uniform(0.9, 1.1))
        for name in findings:
            for _ in range(PATCHES_PER_FINDING):
                self.add_finding(image, name, rng, s, strength)
        fy, fx = (int(v) for v in rng.integers(0, (h, w)))
        image += 0.025 * self.field[fy : fy + h, fx : fx + w]
        image += noise * rng.standard_normal(image.shape, dtype=np.float32)
        if contrast != 1.0 or gamma != 1.0:
            image = np.clip((image - 0.5) * contrast + 0.5, 0.0, 1.0) ** gamma
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- writers


def nih_findings(row: np.ndarray) -> list[str]:
    return [name for name, value in zip(CXR19, row, strict=True) if value]


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
            findings = nih_findings(source[list(CXR19)].to_numpy())
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


def mimic_labels(source: pd.Series, rng: np.random.Generator) -> dict[str, int]:
    """26-class CXR-LT 2023 labels (MIMIC names) for one real NIH label row."""
    out = {"Pleural Effusion" if n == "Effusion" else n: int(source[n]) for n in CXR19}
    for name, rate in MIMIC_ONLY_RATES.items():
        out[name] = int(rng.random() < rate)
    if out["Consolidation"] or out["Infiltration"] or out["Pneumonia"]:
        out["Lung Opacity"] = int(rng.random() < 0.6)
    out["No Finding"] = int(not any(out.values()))
    return out


def write_mimic(
    pool: pd.DataFrame,
    patients: list[np.ndarray],
    paths: StudyPaths,
    image_size: int,
    seed: int,
    progress: tqdm,
) -> None:
    """External set: MIMIC-CXR-JPG layout, CXR-LT 2023 label file and metadata with laterals."""
    rng = np.random.default_rng([seed, 26])
    height, width = image_size, int(round(image_size * 1.15))
    frontal, lateral = Renderer(height, width, seed), Renderer(height, height, seed)
    label_rows, meta_rows = [], []
    subject = 10_000_000 + int(rng.integers(0, 100_000))
    study = 50_000_000 + int(rng.integers(0, 100_000))
    for patient in patients:
        subject += int(rng.integers(1, 50))
        for index in patient:
            study += int(rng.integers(1, 50))
            source = pool.iloc[index]
            labels = mimic_labels(source, rng)
            findings = nih_findings(source[list(CXR19)].to_numpy())
            views = ["PA" if rng.random() < 0.6 else "AP"]
            if rng.random() < LATERAL_FRACTION:
                views.append("LATERAL" if rng.random() < 0.7 else "LL")
            for view in views:
                is_lateral = view in ("LATERAL", "LL")
                renderer = lateral if is_lateral else frontal
                pixels = renderer.render(
                    findings,
                    rng,
                    scale=(0.78, 0.9),
                    lateral=is_lateral,
                    noise=0.045,
                    gamma=rng.uniform(0.7, 0.9),
                    contrast=rng.uniform(1.1, 1.3),
                )
                dicom = dicom_id(rng)
                rel = Path("files") / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
                (paths.mimic_root / rel).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, "L").save(
                    paths.mimic_root / rel / f"{dicom}.jpg", quality=90
                )
                label_rows.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": subject,
                        "study_id": study,
                        **{n: labels[n] for n in MIMIC_26},
                        "path": str(rel / f"{dicom}.jpg"),
                    }
                )
                meta_rows.append(
                    {
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
                )
            progress.update()
    pd.DataFrame(label_rows).to_csv(paths.mimic_csv, index=False)
    pd.DataFrame(meta_rows, columns=list(METADATA_COLUMNS)).to_csv(
        paths.mimic_metadata, index=False
    )


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
) -> StudyPaths:
    """Write a synthetic study at `root` (layout of `study_paths`); deterministic for a seed.

    `n_mimic` counts external studies: each has one frontal image and, for about 15% of them,
    a lateral one too (filtered by the metadata, as the paper filtered MIMIC's test set).
    """
    paths = study_paths(root)
    paths.nih_images.mkdir(parents=True, exist_ok=True)
    paths.mimic_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = real_label_rows()
    splits = {"train": n_train, "val": n_val, "test": n_test}
    drawn = draw_patients(pool, [*splits.values(), n_mimic], rng)
    renderer = Renderer(image_size, image_size, seed)
    subject = 1
    total = sum(splits.values()) + n_mimic
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
        write_mimic(pool, drawn[3], paths, image_size, seed, bar)
    return paths
