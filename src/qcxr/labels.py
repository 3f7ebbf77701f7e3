"""Task label sets, dataset name aliases and the paper's occurrence order (Sec. III-B, Table I).

Label i of a task is qubit i of the dressed quantum circuit.
"""

from __future__ import annotations

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

TASKS: dict[str, list[str]] = {"cxr8": list(CXR8), "cxr14": list(CXR14), "cxr19": list(CXR19)}

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


def task_labels(task: str) -> list[str]:
    """The ordered label list of a task ("cxr8", "cxr14" or "cxr19")."""
    try:
        return list(TASKS[task.lower()])
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}") from None


def canonical(name: str) -> str:
    """The NIH-CXR-LT spelling of a label name from any supported dataset."""
    name = name.strip()
    return ALIASES.get(name, name)


def by_occurrence(labels: list[str]) -> list[str]:
    """Labels sorted as in Table I (most frequent first); unknown labels keep their order, last."""
    rank = {name: i for i, name in enumerate(OCCURRENCE_ORDER)}
    return sorted(labels, key=lambda n: rank.get(n, len(rank)))
