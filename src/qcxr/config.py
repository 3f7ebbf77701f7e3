"""Typed experiment configuration. Every paper default is written here once, with its source.

A run's config is a `Config`; YAML files in `configs/` override any field by its dotted path.

Every setting is checked when a config is built (`from_dict`, `load`): its type, its range or
its choices (written once, in the field's type: `Annotated[int, Rule(ge=1)]`, a `Literal`) and
the rules between settings (qcxr.config_check: `AT_MOST`, `DISTINCT`, the task). pydantic does
the checking and is imported only then, so importing this module stays light (the standard
library and qcxr.labels: benchmark workers import it under other interpreters). Every problem
is reported at once, one line each, naming the dotted key, the value given and what is allowed
(`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from qcxr.labels import Task, resolve_task

# The values of choice settings; CLI choices and checks read them from here. Those of settings
# that another module implements are written here too, so that checking a config never imports
# that module (jax); tests hold them equal to the implementing module's.
Head = Literal["cdl", "dqc"]
Mode = Literal["finetune", "frozen"]
Backbone = Literal["resnet50", "tiny"]
Source = Literal["auto", "nih", "mimic"]
VmapSeeds = Literal["auto", "yes", "no"]  # also true/false, as YAML 1.1 reads yes/no
Entangler = Literal["ring", "chain", "none"]  # qcxr.quantum.ansatz.ENTANGLERS
Backend = Literal["auto", "statevector", "mps", "pennylane"]  # qcxr.quantum.BACKENDS
Loss = Literal["bce", "weighted_bce", "focal", "asl"]  # qcxr.train.losses.LOSSES
Schedule = Literal["constant", "cosine", "warmup_cosine"]  # qcxr.train.state.SCHEDULES
Optimizer = Literal["adam", "adamw", "sgd"]  # qcxr.train.state.OPTIMIZERS
Resample = Literal["bicubic", "bilinear"]  # what qcxr.data.preprocess resizes with
# How a study's label files are laid out (qcxr.data.study): the NIH-CXR-LT study layout (nih/ and
# mimic/), the same layout training on its MIMIC-CXR-LT files, the CheXpert CSVs, or any table.
Format = Literal["nih-cxr-lt", "mimic-cxr-lt", "chexpert", "table"]
Uncertain = Literal["ignore", "zeros", "ones"]  # what a -1 label becomes (qcxr.data.tables)
Missing = Literal["ignore", "zeros"]  # what a blank label becomes
Tracking = Literal["tensorboard", "mlflow", "none"]  # qcxr.train.tracking

HEADS: tuple[str, ...] = typing.get_args(Head)  # model.head
MODES: tuple[str, ...] = typing.get_args(Mode)  # train.mode
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)  # model.backbone
SOURCES: tuple[str, ...] = typing.get_args(Source)  # data.source
VMAP_SEEDS: tuple[str, ...] = typing.get_args(VmapSeeds)  # train.vmap_seeds
ENTANGLERS: tuple[str, ...] = typing.get_args(Entangler)  # model.entangler
BACKENDS: tuple[str, ...] = typing.get_args(Backend)  # model.backend
LOSSES: tuple[str, ...] = typing.get_args(Loss)  # train.loss
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)  # train.schedule
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)  # train.optimizer
RESAMPLES: tuple[str, ...] = typing.get_args(Resample)  # data.resample
FORMATS: tuple[str, ...] = typing.get_args(Format)  # data.format
TABLE_FORMATS: tuple[str, ...] = ("table", "chexpert")  # formats read as label tables
UNCERTAIN: tuple[str, ...] = typing.get_args(Uncertain)  # data.uncertain
MISSING: tuple[str, ...] = typing.get_args(Missing)  # data.missing
TRACKING: tuple[str, ...] = typing.get_args(Tracking)  # train.tracking


@dataclass(frozen=True)
class Rule:
    """What a setting accepts beyond its type: bounds (ge >=, gt >, le <=, lt <) and, for a
    list, its least length. pydantic reads it when a config is checked.

    Every value is taken as written: an integer setting takes no "32", no true and no 2.0, a
    bool takes only true or false. A number setting takes an integer, and a string that is a
    finite number: YAML 1.1 reads 1e-4 (no dot) as a string.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None

    def constraints(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = {**handler(source), **self.constraints()}
        if schema["type"] in ("int", "float", "bool", "str"):
            schema["strict"] = True
        if schema["type"] != "float":
            return schema
        from pydantic_core import core_schema

        schema["allow_inf_nan"] = False
        return core_schema.no_info_before_validator_function(_number_from_text, schema)


def _number_from_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value  # the float check names what is wrong


Bool = Annotated[bool, Rule()]
Real = Annotated[float, Rule()]
AtLeast0 = Annotated[int, Rule(ge=0)]
AtLeast1 = Annotated[int, Rule(ge=1)]
Positive = Annotated[float, Rule(gt=0)]
NonNegative = Annotated[float, Rule(ge=0)]
Probability = Annotated[float, Rule(ge=0, le=1)]

# Read by pydantic (a plain dict, so that pydantic need not be imported): a key that is not a
# field is an error.
_STRICT_KEYS = {"extra": "forbid"}


@dataclass(frozen=True)
class DataConfig:
    __pydantic_config__ = _STRICT_KEYS

    resize_shortest: AtLeast1 = 256  # Sec. III-F: resize to 256 on the shortest side
    crop: AtLeast1 = 224  # Sec. III-F: center-crop 224x224 (at most resize_shortest)
    resample: Resample = "bicubic"  # microsoft/resnet-50 preprocessor_config: resample=3 (BICUBIC)
    mean: tuple[Real, Real, Real] = (0.485, 0.456, 0.406)  # Sec. III-F: ImageNet statistics
    std: tuple[Positive, Positive, Positive] = (0.229, 0.224, 0.225)
    hflip_prob: Probability = 0.5  # Sec. III-F: random horizontal flip p = 0.5
    rotate_degrees: Annotated[float, Rule(ge=0, le=180)] = 15.0  # Sec. III-F: +-15 degrees
    loader_threads: AtLeast1 = 4  # Sec. III-F: 4 CPU threads per model
    prefetch: AtLeast0 = 2  # batches read ahead (0 = none)
    # Where a run reads its data (beyond the paper; recorded so a run dir is self-contained).
    study: str = ""  # study root: nih/ label CSVs + images, mimic/ (qcxr.data.datasets.StudyPaths)
    features: str = ""  # frozen mode: dir with {train,val,test,mimic}.safetensors feature stores
    cache: str = ""  # finetune mode: image cache dir ("" = <experiment dir>/cache)
    # Which files train and val come from (beyond the paper, which trains on NIH-CXR-LT):
    # "nih" (nih/ label files), "mimic" (the study's CXR-LT 2023 MIMIC train/val files, for
    # labels NIH lacks) or "auto": nih when its files carry every task label, else mimic.
    source: Source = "auto"
    # Beyond the paper: a researcher's own data (qcxr.data.study, qcxr.data.tables). "nih-cxr-lt"
    # reads data.study (the layout above); "mimic-cxr-lt" is that layout trained on its MIMIC
    # files (data.source mimic); "chexpert" and "table" read label tables: data.csv (one file,
    # or {train, val, test} files) with image paths relative to data.images.
    format: Format = "nih-cxr-lt"
    csv: str | dict[Literal["train", "val", "test"], str] = ""
    images: str = ""  # image root the path column starts from ("" = the train file's folder;
    # chexpert: the folder above it, which holds CheXpert-v1.0-small/)
    path_column: str = ""  # "" = the format's: table "path", chexpert "Path"
    patient_column: str = ""  # "" = table: none (one image per patient); chexpert: from Path
    split_column: str = ""  # values train/val/test; "" = one file per split, or patient splits
    view_column: str = ""  # "" = table: none; chexpert "Frontal/Lateral"
    frontal_only: Bool = True  # keep frontal views (PA, AP, Frontal) when there is a view column
    # Labels other than 0/1: -1 (uncertain, CheXpert's U) and blank (not mentioned). "ignore"
    # leaves the entry out of the loss and of every metric (NaN); the others replace it.
    uncertain: Uncertain = "ignore"
    missing: Missing = "ignore"
    # Patient splits of a table without a split column: seeded, no patient in two splits; the
    # split of every image is written to the run directory (splits.csv).
    split_fractions: tuple[Probability, Probability, Probability] = (0.7, 0.1, 0.2)
    split_seed: AtLeast0 = 0


@dataclass(frozen=True)
class ModelConfig:
    __pydantic_config__ = _STRICT_KEYS

    head: Head = "cdl"  # Sec. III-C: "cdl" (classical) or "dqc" (dressed quantum circuit)
    num_layers: AtLeast1 = 3  # Sec. III-C.2: 3 variational layers
    entangler: Entangler = "ring"  # Sec. III-C.2, Fig. 2: CNOT ring
    # Beyond the paper: "auto" picks "statevector" or "mps" by cost for the run's n, layers and
    # entangler (qcxr.quantum.choose_backend, quantum/__init__.py); "pennylane" = the paper's
    # simulator. A run records what "auto" became in versions.json ("resolved").
    backend: Backend = "auto"
    weights: str = "microsoft/resnet-50"  # Sec. III-C: ImageNet ResNet50 from Hugging Face
    # "random" = init_resnet50_variables(seed), an explicit choice for tests and demos
    # Sec. III-C; "tiny" = a small CNN for tests (same finetune path)
    backbone: Backbone = "resnet50"


@dataclass(frozen=True)
class TrainConfig:
    __pydantic_config__ = _STRICT_KEYS

    mode: Mode = "finetune"  # Sec. III-F trains end to end; "frozen" is this project's fast path
    batch_size: AtLeast1 = 32  # Sec. III-F
    learning_rate: Positive = 1e-4  # Sec. III-F: Adam, learning rate 1e-4
    optimizer: Optimizer = "adam"  # Sec. III-F
    schedule: Schedule = "constant"  # Sec. III-F: no schedule is mentioned
    loss: Loss = "bce"  # Sec. III-F: mean binary cross-entropy over labels
    max_epochs: AtLeast1 = 50  # Sec. III-F
    # Sec. III-F: early stopping after 5 epochs without improvement. At least 1: with 0 every
    # run would stop after its first epoch (train/early_stopping.py); patience >= max_epochs
    # turns early stopping off.
    patience: AtLeast1 = 5
    # Sec. III-F: 5 random seeds (numpy generators take no negative seed)
    seeds: Annotated[tuple[AtLeast0, ...], Rule(min_length=1)] = (0, 1, 2, 3, 4)
    seed: AtLeast0 = 0  # the run's root seed (one of `seeds`), split by purpose (Sec. III-F)
    # Beyond the paper: resumability, evaluation batch, loss and schedule options.
    checkpoint_every: AtLeast0 = 500  # steps between mid-epoch "latest" saves (0 = epoch ends)
    eval_batch_size: AtLeast1 = 256
    warmup_steps: AtLeast0 = 0  # for schedule "warmup_cosine"
    focal_gamma: NonNegative = 2.0  # loss "focal" (LongTailCXR: gamma = 2)
    asl_gamma_pos: NonNegative = 1.0  # loss "asl" (CheXFusion lineage: gamma+ = 1, gamma- = 4)
    asl_gamma_neg: NonNegative = 4.0
    asl_clip: Annotated[float, Rule(ge=0, lt=1)] = 0.05
    # Frozen mode: train the seeds of one grid cell together with vmap. "auto" = on GPU/TPU;
    # on CPU one seed at a time measured as fast or faster (benchmarks/train_frozen_epoch.md).
    # "auto", "yes", "no"; true and false (YAML 1.1 reads yes and no so) and their strings too.
    vmap_seeds: VmapSeeds | Literal["true", "false"] | Bool = "auto"
    # Frozen mode: z-score every feature with the training split's mean and std (saved in the
    # run as feature_norm.safetensors). Off for the paper; on in the demo, whose random-weight
    # backbone gives pooled features of large offset that saturate the DQC's tanh.
    standardize_features: Bool = False
    # Beyond the paper: each kind of checkpoint (latest, best) keeps this many newest steps, so
    # a broken newest one (a truncated file) falls back to the one before it (train/checkpoint).
    keep_checkpoints: AtLeast1 = 2
    # Frozen mode: the study's external test set must have its feature store; false trains
    # without it, with a note (train/data.load_frozen_data).
    require_external_test: Bool = True
    # Beyond the paper: every run writes TensorBoard event files (<run>/tensorboard/); "mlflow"
    # logs the same to MLflow too (MLFLOW_TRACKING_URI, else a local store); "none" neither.
    tracking: Tracking = "tensorboard"


@dataclass(frozen=True)
class EvalConfig:
    __pydantic_config__ = _STRICT_KEYS

    alpha: Annotated[float, Rule(gt=0, lt=1)] = 0.05  # Sec. III-G: significance at p < 0.05
    # long-tail convention (not in the paper): head > 1000 train images, tail < 100, medium in
    # between (tail_max_count at most head_min_count)
    head_min_count: AtLeast0 = 1000
    tail_max_count: AtLeast0 = 100
    bootstrap: AtLeast0 = 1000  # resamples of the report's intervals (0 = no intervals)
    f1_threshold: Probability = 0.5


@dataclass(frozen=True)
class BenchConfig:
    __pydantic_config__ = _STRICT_KEYS

    warmup: AtLeast1 = 10  # Sec. III-E: 10 warm-up steps (at least 1: the first compiles)
    steps: AtLeast1 = 30  # Sec. III-E: 30 timed steps
    batches_per_epoch: AtLeast1 = 2454  # Sec. IV-A: minutes per epoch over 2,454 batches


@dataclass(frozen=True)
class Config:
    __pydantic_config__ = _STRICT_KEYS

    task: str = "cxr8"  # Sec. III-B: cxr8, cxr14, cxr19; beyond: nih20, cxr26 (qcxr.labels)
    # Beyond the paper: an explicit label list (label i = qubit i), named by `task`.
    labels: tuple[str, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


class ConfigError(ValueError):
    """Every problem of a config: "<where>: <problem>", or "<where>: N problems:" and one
    indented line per problem. Each problem names the dotted key, the value and what is allowed."""

    def __init__(self, problems: list[str], where: str = "config"):
        self.problems, self.where = list(problems), where
        super().__init__(_message(self.problems, where))


def _message(problems: list[str], where: str) -> str:
    """The message of a `ConfigError`."""
    if len(problems) == 1:
        return f"{where}: {problems[0]}"
    return f"{where}: {len(problems)} problems:" + "".join(f"\n  {p}" for p in problems)


def from_dict(updates: Mapping[str, Any], base: Config | None = None) -> Config:
    """A `Config` from nested mappings (as read from YAML) over `base` (default: the paper's).

    Every setting is checked, and the task (a built-in label set name, or a name with an
    explicit `labels` list without duplicates); a `ConfigError` lists every problem.
    """
    data = merge(dataclasses.asdict(base or Config()), updates)
    from qcxr.config_check import checked  # pydantic: only when a config is built

    config, problems = checked(data)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def task_of(config: Config) -> Task:
    """The run's task: its name and ordered labels (label i = qubit i)."""
    return resolve_task(config.task, config.labels)


def load(path: str | Path) -> Config:
    """Read a YAML config file; errors name the file and the offending key."""
    path = Path(path)
    data = read_yaml(path)
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(err.problems, str(path)) from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file ({} when empty). Malformed YAML, a key given twice
    in one mapping (PyYAML would keep the last silently) or a top level that is not a mapping
    is a `ConfigError` of one line: the file, line and column, and the problem."""
    import yaml  # here, not at the top: the benchmark workers import this module without it

    from qcxr.config_check import line_column, unique_key_loader, yaml_problem

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"byte {err.start}: not UTF-8 text ({err.reason})"], str(path)) from None
    try:
        data = yaml.load(text, Loader=unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        raise ConfigError([yaml_problem(err)], str(path)) from None
    except yaml.YAMLError as err:  # a ReaderError: a character YAML does not allow
        line, column = line_column(text, getattr(err, "position", 0))
        char = getattr(err, "character", None)
        shown = f"character #x{char:04x}" if isinstance(char, int) else f"character {char!r}"
        problem = f"{shown}: {getattr(err, 'reason', err)}"
        raise ConfigError([f"line {line}, column {column}: {problem}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        got = repr(data) if len(repr(data)) <= 60 else f"a {type(data).__name__}"
        raise ConfigError(
            [f"expected a mapping of settings at the top level, got {got}"], str(path)
        )
    return data


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
