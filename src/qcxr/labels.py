"""Task label sets, dataset name aliases and the paper's occurrence order (Sec. III-B, Table I).

Label i of a task is qubit i of the dressed quantum circuit. A task is a built-in label set
(`LABEL_SETS`: the paper's `TASKS` cxr8, cxr14, cxr19, then nih20 and cxr26, each a prefix of
the next, so a label keeps its qubit across them) or an explicit list of labels given a name
(config `task: NAME` with `labels: [...]`; CLI `--task NAME --labels A,B,...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CXR8: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
CXR14: tuple[str, ...] = CXR8 + (
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)
CXR19: tuple[str, ...] = CXR14 + (
    "Calcification of the Aorta",
    "Pneumomediastinum",
    "Pneumoperitoneum",
    "Subcutaneous Emphysema",
    "Tortuous Aorta",
)
# Beyond the paper. Every NIH-CXR-LT class: CXR-19, then No Finding (the file has it last too).
NIH20: tuple[str, ...] = CXR19 + ("No Finding",)
# The CXR-LT 2023 classes NIH-CXR-LT lacks, in canonical spelling ("Lesion" is MIMIC's "Lung
# Lesion", see ALIASES), in the order of the CXR-LT 2023 file.
MIMIC_ONLY: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lesion",
    "Lung Opacity",
    "Pleural Other",
    "Support Devices",
)
# The 26 CXR-LT 2023 classes (the 19 MIMIC-CXR-LT 2023 ones plus Emphysema, Fibrosis, Hernia,
# Infiltration, Mass, Nodule, Pleural Thickening): NIH-20 first, so qubits keep their labels.
CXR26: tuple[str, ...] = NIH20 + MIMIC_ONLY

# The paper's tasks (Sec. III-B); these three keys, in this order, are a contract.
TASKS: dict[str, list[str]] = {"cxr8": list(CXR8), "cxr14": list(CXR14), "cxr19": list(CXR19)}
# Every built-in label set: the paper's tasks, then those beyond the paper.
LABEL_SETS: dict[str, list[str]] = {**TASKS, "nih20": list(NIH20), "cxr26": list(CXR26)}

# Canonical (NIH-CXR-LT) name for every spelling seen in NIH, MIMIC and CXR-LT files.
ALIASES: dict[str, str] = {
    "Pleural Effusion": "Effusion",
    "Pleural_Thickening": "Pleural Thickening",
    "Infiltrate": "Infiltration",
    "Lung Lesion": "Lesion",
    "Calcification of the aorta": "Calcification of the Aorta",
    "Subcutaneous emphysema": "Subcutaneous Emphysema",
}

# Table I, NIH-CXR-LT training counts: the paper's occurrence order for figures.
PAPER_TRAIN_COUNTS: dict[str, int] = {
    "Infiltration": 12739,
    "Effusion": 7919,
    "Atelectasis": 7587,
    "Nodule": 4359,
    "Mass": 3689,
    "Pneumothorax": 2432,
    "Consolidation": 2626,
    "Pleural Thickening": 1998,
    "Cardiomegaly": 1590,
    "Emphysema": 1327,
    "Edema": 1283,
    "Subcutaneous Emphysema": 957,
    "Fibrosis": 1138,
    "Pneumonia": 806,
    "Tortuous Aorta": 598,
    "Calcification of the Aorta": 368,
    "Pneumoperitoneum": 214,
    "Pneumomediastinum": 88,
    "Hernia": 130,
}
# Table I order is by total count (train + val + test), which is what this list follows.
OCCURRENCE_ORDER: tuple[str, ...] = (
    "Infiltration",
    "Effusion",
    "Atelectasis",
    "Nodule",
    "Mass",
    "Pneumothorax",
    "Consolidation",
    "Pleural Thickening",
    "Cardiomegaly",
    "Emphysema",
    "Edema",
    "Subcutaneous Emphysema",
    "Fibrosis",
    "Pneumonia",
    "Tortuous Aorta",
    "Calcification of the Aorta",
    "Pneumoperitoneum",
    "Pneumomediastinum",
    "Hernia",
)


@dataclass(frozen=True)
class Task:
    """A named, ordered label set: label i is qubit i."""

    name: str
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _builtin_names() -> str:
    return ", ".join(LABEL_SETS)


def _check_name(name: object) -> str:
    """A task name is a directory name of every run (runs/<experiment>/<task>/<head>/...)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"task name {name!r} must be a non-empty string without outer spaces")
    if "/" in name or "\\" in name or name in (".", "..", "summary"):
        raise ValueError(f"task name {name!r} cannot be a directory name of its runs")
    return name


def checked_labels(labels: Sequence[str], where: str = "labels") -> tuple[str, ...]:
    """Canonical names of an explicit label list; empty names and duplicates are errors."""
    if isinstance(labels, str):
        raise ValueError(f"{where}: expected a list of label names, got the string {labels!r}")
    bad = [n for n in labels if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"{where}: label names must be non-empty strings, got {bad}")
    names = [canonical(n) for n in labels]
    seen: dict[str, list[str]] = {}
    for original, name in zip(labels, names, strict=True):
        seen.setdefault(name, []).append(original)
    duplicates = {name: spelled for name, spelled in seen.items() if len(spelled) > 1}
    if duplicates:
        shown = "; ".join(f"{n} (as {', '.join(map(repr, s))})" for n, s in duplicates.items())
        raise ValueError(f"{where}: duplicate label(s): {shown}")
    return tuple(names)


def builtin_name(name: str) -> str | None:
    """The `LABEL_SETS` key a task name spells, in any case and with the paper's hyphen
    ("CXR-14", "CXR14", "cxr14" -> "cxr14"); None for any other name."""
    key = name.strip().lower().replace("-", "")
    return key if key in LABEL_SETS else None


def resolve_task(task: str | Task, labels: Sequence[str] = ()) -> Task:
    """The Task for a built-in set name (any case, "CXR-14" too), or for a name given with an
    explicit label list, which keeps the name as given (unless it spells out a built-in set)."""
    if isinstance(task, Task):
        return task
    name = _check_name(task)
    builtin = builtin_name(name)
    if labels:
        names = checked_labels(labels, f"task {name}: labels")
        if builtin is not None and list(names) != LABEL_SETS[builtin]:
            raise ValueError(
                f"task {name!r} is a built-in label set ({_builtin_names()}) but the labels "
                "given differ from it; give your list another name (task: NAME, --task NAME)"
            )
        return Task(builtin or name, names)  # the built-in set spelled out: its own name
    if builtin is not None:
        return Task(builtin, tuple(LABEL_SETS[builtin]))
    raise ValueError(
        f"unknown task {name!r}; built-in label sets: {_builtin_names()}; or name an "
        "explicit list (config `task: NAME` with `labels: [...]`, CLI --task NAME --labels)"
    )


def task_labels(task: str | Task, labels: Sequence[str] = ()) -> list[str]:
    """The ordered label list of a task (a built-in set name, or a name with its `labels`)."""
    return list(resolve_task(task, labels).labels)


def spellings(name: str) -> str:
    """A canonical label name with its other spellings, for error messages."""
    others = [alias for alias, target in ALIASES.items() if target == name]
    return repr(name) if not others else f"{name!r} (or {' / '.join(map(repr, others))})"


def read_labels_file(path: str) -> list[str]:
    """Label names from a text file, one per line; blank lines and # comments are skipped."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: labels file not found")
    lines = (line.split("#", 1)[0].strip() for line in file.read_text().splitlines())
    names = [line for line in lines if line]
    if not names:
        raise ValueError(f"{file}: no label names (one per line)")
    return names


def canonical(name: str) -> str:
    """The NIH-CXR-LT spelling of a label name from any supported dataset."""
    name = name.strip()
    return ALIASES.get(name, name)


def by_occurrence(labels: list[str]) -> list[str]:
    """Labels sorted as in Table I (most frequent first); unknown labels keep their order, last."""
    rank = {name: i for i, name in enumerate(OCCURRENCE_ORDER)}
    return sorted(labels, key=lambda n: rank.get(n, len(rank)))
