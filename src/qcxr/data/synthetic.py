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

Label sets beyond NIH-CXR-LT's 20 classes (cxr26, explicit lists, `extra_labels`): the study also
gets MIMIC-CXR-LT train and val files in the CXR-LT 2023 layout (the test file's), whose columns
are the 26 classes plus any extra synthetic labels. Labels without an NIH counterpart are drawn
at long-tailed prevalences and, in such a study, leave a texture of their own too, so every
label of its set can be learned.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

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
MAX_IMAGES_PER_PATIENT = 8  # keeps small splits from being a handful of patients
LATERAL_FRACTION = 0.15
PATCHES_PER_FINDING = 2
NIH_LABEL_STRENGTH = 0.35  # texture amplitude in [0, 1] intensity units


@dataclass(frozen=True)
class Texture:
    family: str  # grating | checker | dots | rings
    cycles: float  # cycles per image width
    angle: float  # degrees


def label_textures(others: list[str] | tuple[str, ...] = ()) -> dict[str, Texture]:
    """One distinct texture per NIH label (CXR19 order), then one per label of `others`."""
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
    textures = {name: Texture(*spec) for name, spec in zip(CXR19, specs, strict=True)}
    families = ("grating", "checker", "dots", "rings")
    extra = [n for n in others if n not in textures and n != "No Finding"]
    for k, name in enumerate(extra):
        textures[name] = Texture(families[k % 4], 12 + (7 * k) % 26, (47 * k) % 180)
    return textures


@dataclass(frozen=True)
class StudyPaths:
    root: Path
    nih_dir: Path
    nih_images: Path
    nih_csv: dict[str, Path]  # split -> label file (train, val, test)
    mimic_root: Path
    mimic_csv: Path  # the test split: the external test set of an NIH-trained study
    mimic_metadata: Path
    mimic_split_csv: dict[str, Path]  # split -> CXR-LT 2023 label file (train, val: when written)
    labels_file: Path  # the study's label set, one per line (`--labels-file` of `qcxr train`)


def study_paths(root: str | Path) -> StudyPaths:
    """The paths of a study at `root` in the synthetic (= real) layout; nothing is checked."""
    root = Path(root)
    nih, mimic = root / "nih", root / "mimic"
    mimic_csv = {s: mimic / f"cxr-lt-2023_mimic_{s}.csv" for s in ("train", "val", "test")}
    return StudyPaths(
        root=root,
        nih_dir=nih,
        nih_images=nih / "images",
        nih_csv={
            s: nih / f"miccai2023_nih-cxr-lt_labels_{s}.csv" for s in ("train", "val", "test")
        },
        mimic_root=mimic,
        mimic_csv=mimic_csv["test"],
        mimic_metadata=mimic / "mimic-cxr-2.0.0-metadata.csv",
        mimic_split_csv=mimic_csv,
        labels_file=root / "labels.txt",
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

    def __init__(self, height: int, width: int, seed: int = 0, labels: tuple[str, ...] = ()):
        self.height, self.width = height, width
        # x in [-w/h, w/h] so shapes stay round on non-square images; y in [-1, 1].
        aspect = width / height
        self.y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        self.x = np.linspace(-aspect, aspect, width, dtype=np.float32)[None, :]
        self.textures = label_textures(labels)
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


@dataclass(frozen=True)
class StudyLabels:
    """What a study is generated for: its label set, the extra synthetic labels among them, and
    whether it needs MIMIC train/val files (any label NIH-CXR-LT lacks)."""

    labels: tuple[str, ...]  # canonical names, the study's qubit order (labels.txt)
    extra_rates: dict[str, float]  # labels with no NIH or CXR-LT 2023 counterpart -> prevalence

    @property
    def mimic_training(self) -> bool:
        return not set(self.labels) <= set(NIH20)


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


def mimic_findings(labels: dict[str, int], source: pd.Series, every_label: bool) -> list[str]:
    """Labels rendered as textures: NIH findings, plus every other positive in a study that
    trains on MIMIC (canonical names)."""
    findings = nih_findings(source[list(CXR19)].to_numpy())
    if every_label:
        nih = set(findings) | {"No Finding"}
        findings += [canonical(n) for n, v in labels.items() if v and canonical(n) not in nih]
    return findings


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
                findings = mimic_findings(labels, source, self.labels.mimic_training)
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
    textures = labels.labels if labels.mimic_training else ()
    renderers = (Renderer(height, width, seed, textures), Renderer(height, height, seed, textures))
    writer = MimicWriter(pool, paths, renderers, labels, progress)
    for k, (split, patients) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, 26] if split == "test" else [seed, 26, k])
        rows = writer.split(patients, rng, MIMIC_SUBJECT_BASE[split])
        pd.DataFrame(rows).to_csv(paths.mimic_split_csv[split], index=False)
    pd.DataFrame(writer.meta_rows, columns=list(METADATA_COLUMNS)).to_csv(
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
    return paths
