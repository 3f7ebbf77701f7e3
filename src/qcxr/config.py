"""Typed experiment configuration. Every paper default is written here once, with its source.

A run's config is a `Config`; YAML files in `configs/` override any field by its dotted path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcxr.labels import Task, resolve_task

# The values some settings take; CLI choices and checks read them from here.
HEADS = ("cdl", "dqc")  # model.head
MODES = ("finetune", "frozen")  # train.mode
BACKBONES = ("resnet50", "tiny")  # model.backbone
SOURCES = ("auto", "nih", "mimic")  # data.source
VMAP_SEEDS = ("auto", "yes", "no")  # train.vmap_seeds


@dataclass(frozen=True)
class DataConfig:
    resize_shortest: int = 256  # Sec. III-F: resize to 256 on the shortest side
    crop: int = 224  # Sec. III-F: center-crop 224x224
    resample: str = "bicubic"  # microsoft/resnet-50 preprocessor_config: resample=3 (BICUBIC)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # Sec. III-F: ImageNet statistics
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    hflip_prob: float = 0.5  # Sec. III-F: random horizontal flip p = 0.5
    rotate_degrees: float = 15.0  # Sec. III-F: random rotation +-15 degrees
    loader_threads: int = 4  # Sec. III-F: 4 CPU threads per model
    prefetch: int = 2
    # Where a run reads its data (beyond the paper; recorded so a run dir is self-contained).
    study: str = ""  # study root: nih/ label CSVs + images, mimic/ (qcxr.data.datasets.StudyPaths)
    features: str = ""  # frozen mode: dir with {train,val,test,mimic}.safetensors feature stores
    cache: str = ""  # finetune mode: image cache dir ("" = <experiment dir>/cache)
    # Which files train and val come from (beyond the paper, which trains on NIH-CXR-LT):
    # "nih" (nih/ label files), "mimic" (the study's CXR-LT 2023 MIMIC train/val files, for
    # labels NIH lacks) or "auto": nih when its files carry every task label, else mimic.
    source: str = "auto"


@dataclass(frozen=True)
class ModelConfig:
    head: str = "cdl"  # Sec. III-C: "cdl" (classical) or "dqc" (dressed quantum circuit)
    num_layers: int = 3  # Sec. III-C.2: 3 variational layers
    entangler: str = "ring"  # Sec. III-C.2, Fig. 2: CNOT ring
    # Beyond the paper: "auto" picks "statevector" or "mps" by cost for the run's n, layers and
    # entangler (qcxr.quantum.choose_backend, quantum/__init__.py); "pennylane" = the paper's
    # simulator. A run records what "auto" became in versions.json ("resolved").
    backend: str = "auto"
    weights: str = "microsoft/resnet-50"  # Sec. III-C: ImageNet ResNet50 from Hugging Face
    # "random" = init_resnet50_variables(seed), an explicit choice for tests and demos
    backbone: str = "resnet50"  # Sec. III-C; "tiny" = a small CNN for tests (same finetune path)


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "finetune"  # Sec. III-F trains end to end; "frozen" is this project's fast path
    batch_size: int = 32  # Sec. III-F
    learning_rate: float = 1e-4  # Sec. III-F: Adam, learning rate 1e-4
    optimizer: str = "adam"  # Sec. III-F
    schedule: str = "constant"  # Sec. III-F: no schedule is mentioned
    loss: str = "bce"  # Sec. III-F: mean binary cross-entropy over labels
    max_epochs: int = 50  # Sec. III-F
    patience: int = 5  # Sec. III-F: early stopping after 5 epochs without improvement
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # Sec. III-F: 5 random seeds
    seed: int = 0  # the run's root seed (one of `seeds`), split by purpose (Sec. III-F)
    # Beyond the paper: resumability, evaluation batch, loss and schedule options.
    checkpoint_every: int = 500  # steps between mid-epoch "latest" checkpoints (0 = epoch ends)
    eval_batch_size: int = 256
    warmup_steps: int = 0  # for schedule "warmup_cosine"
    focal_gamma: float = 2.0  # loss "focal" (LongTailCXR: gamma = 2)
    asl_gamma_pos: float = 1.0  # loss "asl" (CheXFusion lineage: gamma+ = 1, gamma- = 4)
    asl_gamma_neg: float = 4.0
    asl_clip: float = 0.05
    # Frozen mode: train the seeds of one grid cell together with vmap. "auto" = on GPU/TPU;
    # on CPU one seed at a time measured as fast or faster (benchmarks/train_frozen_epoch.md).
    vmap_seeds: str = "auto"  # "auto", "yes", "no"
    # Frozen mode: z-score every feature with the training split's mean and std (saved in the
    # run as feature_norm.safetensors). Off for the paper; on in the demo, whose random-weight
    # backbone gives pooled features of large offset that saturate the DQC's tanh.
    standardize_features: bool = False


@dataclass(frozen=True)
class EvalConfig:
    alpha: float = 0.05  # Sec. III-G: significance at p < 0.05
    head_min_count: int = 1000  # long-tail convention (not in the paper): head > 1000 train images
    tail_max_count: int = 100  # tail < 100 train images; medium in between
    bootstrap: int = 1000
    f1_threshold: float = 0.5


@dataclass(frozen=True)
class BenchConfig:
    warmup: int = 10  # Sec. III-E: 10 warm-up steps
    steps: int = 30  # Sec. III-E: 30 timed steps
    batches_per_epoch: int = 2454  # Sec. IV-A: minutes per epoch extrapolated over 2,454 batches


@dataclass(frozen=True)
class Config:
    task: str = "cxr8"  # Sec. III-B: cxr8, cxr14, cxr19; beyond: nih20, cxr26 (qcxr.labels)
    # Beyond the paper: an explicit label list (label i = qubit i), named by `task`.
    labels: tuple[str, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


def _override(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """A copy of dataclass `obj` with `updates` applied recursively; unknown keys are errors."""
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        if key not in known:
            raise ValueError(f"{where}: unknown config key {key!r}; known: {sorted(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key}: expected a mapping, got {value!r}")
            changes[key] = _override(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        elif (
            isinstance(current, float)
            and isinstance(value, int | str)
            and not isinstance(value, bool)
        ):
            # YAML 1.1 reads "1e-4" (no dot) as a string; a float field takes it as a number.
            try:
                changes[key] = float(value)
            except ValueError:
                raise ValueError(f"{where}.{key}: expected a number, got {value!r}") from None
        else:
            changes[key] = value
    return dataclasses.replace(obj, **changes)


def from_dict(updates: dict[str, Any], base: Config | None = None) -> Config:
    """A `Config` from nested mappings (as read from YAML) over `base` (default: the paper's).

    The task is checked here: a built-in label set name, or a name with an explicit `labels`
    list (no duplicates); errors say which.
    """
    config = _override(base or Config(), updates, "config")
    task_of(config)
    return config


def task_of(config: Config) -> Task:
    """The run's task: its name and ordered labels (label i = qubit i)."""
    return resolve_task(config.task, config.labels)


def load(path: str | Path) -> Config:
    """Read a YAML config file; errors name the file and the offending key."""
    import yaml  # here, not at the top: the benchmark workers import this module without it

    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    try:
        return from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} from "a.b": a dotted-key override as a nested mapping."""
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` applied recursively (nested mappings merge, other values replace)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_settings(
    old: Mapping[str, Any], new: Mapping[str, Any], allowed: frozenset[str] | set[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for every setting that differs, but those `allowed` to change.

    The one "may this be resumed?" check: a run, a feature extraction and a benchmark cell are
    continued only when what they compute is set the same.
    """
    before, after = flat(old), flat(new)
    keys = sorted(set(before) | set(after))
    return {
        k: (before.get(k), after.get(k))
        for k in keys
        if before.get(k) != after.get(k) and k not in allowed
    }


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """ "key: old then, new now" for each change, as an error message names them."""
    return ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changes.items())
