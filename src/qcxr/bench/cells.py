"""What a Table III run asks for (`Plan`) and what one measured cell records (`Cell`).

A cell is one (framework, head, n) at one backbone and batch; its result is one JSON file,
`cells/<framework>_<head>_n<n>_<backbone>_b<batch>.json`, written by the worker that measured it
or, for a cell with no time (killed, crashed, not installed), by the harness. The framework
workers import this module under other interpreters: standard library and `qcxr.config` only.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcxr.config import changed_settings

STATUSES = ("ok", "error", "skipped", "memory", "timeout")
# Statuses a `--reuse any` run keeps: a limit that was hit is a result too.
FINISHED = ("ok", "memory", "timeout")
REUSE = ("same", "any", "none")
# The settings a cell is measured with; `--reuse same` keeps a cell only when they are the plan's.
SETTINGS = ("framework", "head", "num_labels", "backbone", "batch", "warmup", "steps")


def cell_name(framework: str, head: str, num_labels: int, backbone: str, batch: int) -> str:
    """File stem of one cell's result."""
    return f"{framework}_{head}_n{num_labels}_{backbone}_b{batch}"


@dataclass(frozen=True)
class Plan:
    """What a Table III run was asked to measure and how its tables extrapolate."""

    frameworks: tuple[str, ...]
    heads: tuple[str, ...]
    labels: tuple[int, ...]
    backbone: str
    batch: int
    warmup: int
    steps: int
    batches_per_epoch: int
    tf_mode: str = "xla"

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.labels):
            raise ValueError(f"--labels {list(self.labels)}: every n must be >= 1")
        if self.batch < 1:
            raise ValueError(f"--batch {self.batch}: must be >= 1")
        if self.warmup < 1:
            raise ValueError(f"--warmup {self.warmup}: must be >= 1 (the first step compiles)")
        if self.steps < 1:
            raise ValueError(f"--steps {self.steps}: must be >= 1")
        if self.batches_per_epoch < 1:
            raise ValueError(f"--batches-per-epoch {self.batches_per_epoch}: must be >= 1")

    def name(self, framework: str, head: str, num_labels: int) -> str:
        return cell_name(framework, head, num_labels, self.backbone, self.batch)

    def cells(self, frameworks: tuple[str, ...]) -> Iterator[tuple[str, str, int]]:
        """(framework, head, n) of the plan, in table order: n, then head, then `frameworks`."""
        for n in self.labels:
            for head in self.heads:
                for framework in frameworks:
                    if framework in self.frameworks:
                        yield framework, head, n

    def settings(self, framework: str, head: str, num_labels: int) -> dict[str, Any]:
        """The settings this plan measures one cell with (keys: `SETTINGS`)."""
        return {
            "framework": framework, "head": head, "num_labels": num_labels,
            "backbone": self.backbone, "batch": self.batch, "warmup": self.warmup,
            "steps": self.steps,
        }  # fmt: skip

    def options(self, framework: str) -> dict[str, str]:
        """Options of the framework's `build_step` that the plan sets."""
        return {"tf_mode": self.tf_mode} if framework == "pennylane-tf" else {}


@dataclass(frozen=True)
class Cell:
    """One cell's result file. Fields left None are absent from the file.

    Field order is the file's key order. `warmup_s` holds every warm-up step (the first one
    compiles), `step_s` every timed step; `peak_rss_mb` is the worker process's high-water RSS,
    of this cell alone when `rss_scope` is "cell".
    """

    framework: str
    head: str
    num_labels: int
    backbone: str
    batch: int
    warmup: int
    steps: int
    options: Mapping[str, str] | None = None
    python: str | None = None
    versions: Mapping[str, str | None] = field(default_factory=dict)
    rss_scope: str | None = None
    started: str | None = None
    build_s: float | None = None
    device: str | None = None
    warmup_s: tuple[float, ...] = ()
    step_s: tuple[float, ...] = ()
    first_step_s: float | None = None
    status: str = "error"
    reason: str | None = None
    peak_rss_mb: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"cell status {self.status!r}: expected one of {STATUSES}")
        object.__setattr__(self, "warmup_s", tuple(self.warmup_s))
        object.__setattr__(self, "step_s", tuple(self.step_s))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "cell") -> Cell:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as err:  # a required field is missing
            raise ValueError(f"{where}: {err}") from None

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name in ("warmup_s", "step_s", "versions") and not value):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def settings(self) -> dict[str, Any]:
        """The settings the cell was measured with (keys: `SETTINGS`)."""
        return {key: getattr(self, key) for key in SETTINGS}

    @property
    def timed_steps(self) -> int:
        """Steps behind the mean: those timed, or the steps asked for when none was."""
        return len(self.step_s) if self.step_s else self.steps

    @property
    def mean_s(self) -> float | None:
        return statistics.fmean(self.step_s) if self.step_s else None

    @property
    def std_s(self) -> float | None:
        if not self.step_s:
            return None
        return statistics.stdev(self.step_s) if len(self.step_s) > 1 else 0.0

    def per_epoch_min(self, batches_per_epoch: int) -> float | None:
        """Minutes per epoch of `batches_per_epoch` batches at the mean step."""
        mean = self.mean_s
        return None if mean is None else mean * batches_per_epoch / 60


def read_cell(path: Path) -> Cell | None:
    """The cell recorded at `path`, or None when there is none."""
    if not path.exists():
        return None
    return Cell.from_json(json.loads(path.read_text()), where=str(path))


def write_cell(path: Path, cell: Cell, indent: int | None = None) -> None:
    path.write_text(json.dumps(cell.to_json(), indent=indent))


def reusable(cell: Cell | None, plan: Plan, reuse: str) -> bool:
    """Whether a cell found in the output directory stands for this plan's (`--reuse`)."""
    if reuse not in REUSE:
        raise ValueError(f"reuse {reuse!r}: expected one of {REUSE}")
    if reuse == "none" or cell is None:
        return False
    if reuse == "any":
        return cell.status in FINISHED
    wanted = plan.settings(cell.framework, cell.head, cell.num_labels)
    return cell.status == "ok" and not changed_settings(cell.settings(), wanted)
