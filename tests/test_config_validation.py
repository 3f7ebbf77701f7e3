"""Configs are checked whole before anything runs (issue 13, item 5): every setting's type, range
and choices, and the rules between settings; one line per problem naming the dotted key, the
value and what is allowed; every cell of a grid before any cell trains."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from qcxr import config as config_lib
from qcxr import configs
from qcxr.cli import main
from qcxr.train.grid import cells, read_grid
from test_train_grid import write_study_and_features
from test_train_support import frozen_data


def problem(updates: dict) -> str:
    """The message `from_dict(updates)` raises."""
    with pytest.raises(ValueError) as err:
        config_lib.from_dict(updates)
    assert isinstance(err.value, config_lib.ConfigError)
    return str(err.value)


# The faults of the trial, then one of each kind of rule: (settings, the one problem named).
FAULTS = [
    ({"train": {"batch_size": "32"}}, "train.batch_size: '32' is not an integer >= 1"),
    ({"train": {"max_epochs": True}}, "train.max_epochs: True is not an integer >= 1"),
    ({"train": {"max_epochs": 2.5}}, "train.max_epochs: 2.5 is not an integer >= 1"),
    ({"train": {"standardize_features": "maybe"}},
     "train.standardize_features: 'maybe' is not true or false"),
    ({"train": {"standardize_features": 1}}, "train.standardize_features: 1 is not true or false"),
    ({"train": {"learning_rate": -0.001}}, "train.learning_rate: -0.001 is not a number > 0"),
    ({"train": {"learning_rate": "-1e-3"}}, "train.learning_rate: -0.001 is not a number > 0"),
    ({"train": {"learning_rate": "fast"}}, "train.learning_rate: 'fast' is not a number > 0"),
    ({"train": {"learning_rate": True}}, "train.learning_rate: True is not a number > 0"),
    ({"train": {"learning_rate": "inf"}}, "train.learning_rate: inf is not a finite number > 0"),
    ({"train": {"batch_size": 0}}, "train.batch_size: 0 is not an integer >= 1"),
    ({"train": {"max_epochs": -1}}, "train.max_epochs: -1 is not an integer >= 1"),
    ({"train": {"patience": 0}}, "train.patience: 0 is not an integer >= 1"),
    ({"train": {"eval_batch_size": 0}}, "train.eval_batch_size: 0 is not an integer >= 1"),
    ({"train": {"warmup_steps": -1}}, "train.warmup_steps: -1 is not an integer >= 0"),
    ({"train": {"checkpoint_every": -5}}, "train.checkpoint_every: -5 is not an integer >= 0"),
    ({"train": {"asl_clip": 1}}, "train.asl_clip: 1 is not a number in [0, 1)"),
    ({"train": {"focal_gamma": -2}}, "train.focal_gamma: -2 is not a number >= 0"),
    ({"train": {"seed": -1}}, "train.seed: -1 is not an integer >= 0"),
    ({"train": {"seeds": []}}, "train.seeds: [] is not a non-empty list of integers >= 0"),
    ({"train": {"seeds": 3}}, "train.seeds: 3 is not a non-empty list of integers >= 0"),
    ({"train": {"seeds": [0, "1"]}}, "train.seeds[1]: '1' is not an integer >= 0"),
    ({"train": {"seeds": [0, 1, 0]}}, "train.seeds: [0, 1, 0] repeats a value"),
    ({"model": {"head": "dcq"}}, "model.head: 'dcq' is not one of cdl, dqc"),
    ({"model": {"num_layers": 0}}, "model.num_layers: 0 is not an integer >= 1"),
    ({"model": {"entangler": "star"}}, "model.entangler: 'star' is not one of ring, chain, none"),
    ({"model": {"backend": "gpu"}},
     "model.backend: 'gpu' is not one of auto, statevector, mps, pennylane"),
    ({"model": {"backbone": "vit"}}, "model.backbone: 'vit' is not one of resnet50, tiny"),
    ({"train": {"loss": "mse"}}, "train.loss: 'mse' is not one of bce, weighted_bce, focal, asl"),
    ({"train": {"schedule": "step"}},
     "train.schedule: 'step' is not one of constant, cosine, warmup_cosine"),
    ({"train": {"optimizer": "lion"}}, "train.optimizer: 'lion' is not one of adam, adamw, sgd"),
    ({"train": {"mode": "fast"}}, "train.mode: 'fast' is not one of finetune, frozen"),
    ({"train": {"vmap_seeds": "maybe"}},
     "train.vmap_seeds: 'maybe' is not one of auto, yes, no, true, false"),
    ({"data": {"source": "chexpert"}}, "data.source: 'chexpert' is not one of auto, nih, mimic"),
    ({"data": {"resample": "nearest"}}, "data.resample: 'nearest' is not one of bicubic, bilinear"),
    ({"data": {"crop": 300}}, "data.crop: 300 must be <= data.resize_shortest (256)"),
    ({"data": {"crop": 0}}, "data.crop: 0 is not an integer >= 1"),
    ({"data": {"hflip_prob": 1.5}}, "data.hflip_prob: 1.5 is not a number in [0, 1]"),
    ({"data": {"rotate_degrees": -15}}, "data.rotate_degrees: -15 is not a number in [0, 180]"),
    ({"data": {"loader_threads": 0}}, "data.loader_threads: 0 is not an integer >= 1"),
    ({"data": {"prefetch": -1}}, "data.prefetch: -1 is not an integer >= 0"),
    ({"data": {"mean": [0.5, 0.5]}}, "data.mean: [0.5, 0.5] is not a list of 3 numbers"),
    ({"data": {"std": [0.2, 0, 0.2]}}, "data.std[1]: 0 is not a number > 0"),
    ({"data": {"study": 7}}, "data.study: 7 is not a string"),
    ({"eval": {"alpha": 1}}, "eval.alpha: 1 is not a number in (0, 1)"),
    ({"eval": {"f1_threshold": -0.1}}, "eval.f1_threshold: -0.1 is not a number in [0, 1]"),
    ({"eval": {"bootstrap": -1}}, "eval.bootstrap: -1 is not an integer >= 0"),
    ({"eval": {"tail_max_count": 5000}},
     "eval.tail_max_count: 5000 must be <= eval.head_min_count (1000)"),
    ({"bench": {"warmup": 0}}, "bench.warmup: 0 is not an integer >= 1"),
    ({"bench": {"steps": "30"}}, "bench.steps: '30' is not an integer >= 1"),
    ({"labels": "Mass", "task": "mine"}, "labels: 'Mass' is not a list of strings"),
    ({"train": {"batchsize": 3}}, "train.batchsize: unknown setting; did you mean train.batch_size?"),
    ({"model": {"colour": 3}}, "model.colour: unknown setting; model has head, num_layers, "
     "entangler, backend, weights, backbone"),
    ({"train": 5}, "train: 5 is not a mapping of train settings (mode, batch_size, "),
]  # fmt: skip


@pytest.mark.parametrize("updates, expected", FAULTS)
def test_each_fault_names_the_key_the_value_and_what_is_allowed(updates, expected):
    message = problem(updates)
    assert message.startswith(f"config: {expected}")
    assert "\n" not in message  # one problem, one line


def test_the_task_check_stays():
    assert problem({"task": "nope"}).startswith("config: task: unknown task 'nope'; built-in")
    assert "give your list another name" in problem({"labels": ["Mass", "Fracture"]})
    assert "duplicate label(s): Mass" in problem({"task": "d", "labels": ["Mass", "Mass"]})


def test_every_problem_is_listed_together_one_per_line():
    message = problem(
        {
            "train": {"batch_size": "32", "learning_rate": -0.001, "max_epochs": True},
            "model": {"head": "dcq"},
            "data": {"crop": 300, "hflip_prob": 2},
            "task": "nope",
        }
    )
    lines = message.splitlines()
    assert lines[:6] == [
        "config: 7 problems:",
        "  data.hflip_prob: 2 is not a number in [0, 1]",
        "  model.head: 'dcq' is not one of cdl, dqc",
        "  train.batch_size: '32' is not an integer >= 1",
        "  train.learning_rate: -0.001 is not a number > 0",
        "  train.max_epochs: True is not an integer >= 1",
    ]
    # then the rules between settings: the task, crop within resize_shortest
    assert lines[6].startswith("  task: unknown task 'nope'; built-in label sets: cxr8")
    assert lines[7:] == ["  data.crop: 300 must be <= data.resize_shortest (256)"]
    assert config_lib.ConfigError.__mro__[1] is ValueError


def test_a_rule_between_settings_waits_for_its_settings():
    # crop is compared only once resize_shortest is itself valid
    message = problem({"data": {"crop": 300, "resize_shortest": "big"}})
    assert message == "config: data.resize_shortest: 'big' is not an integer >= 1"


def test_valid_values_of_every_kind_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "train:\n"
        "  learning_rate: 1e-4\n"  # YAML 1.1: a string; a float setting reads it as a number
        "  focal_gamma: 3\n"  # an int for a float
        "  asl_clip: 0\n"
        "  vmap_seeds: yes\n"  # YAML 1.1: true
        "  standardize_features: true\n"
        "  seeds: [3, 4]\n"
        "  patience: 1\n"
        "  checkpoint_every: 0\n"
        "  warmup_steps: 0\n"
        "data:\n"
        "  crop: 256\n"  # equal to resize_shortest
        "  hflip_prob: 1\n"
        "  prefetch: 0\n"
        "  mean: [0, 1e-1, 1]\n"
        "eval:\n"
        "  bootstrap: 0\n"  # the report then draws no intervals
        "  f1_threshold: 0\n"
        "  tail_max_count: 1000\n"
    )
    config = config_lib.load(path)
    assert config.train.learning_rate == 1e-4 and isinstance(config.train.learning_rate, float)
    assert config.train.focal_gamma == 3.0 and isinstance(config.train.focal_gamma, float)
    assert config.train.vmap_seeds is True and config.train.standardize_features is True
    assert config.train.seeds == (3, 4) and config.data.mean == (0.0, 0.1, 1.0)
    assert config.data.crop == 256 and config.eval.bootstrap == 0
    for value in ("auto", "yes", "no", "true", "false", True, False):
        assert config_lib.from_dict({"train": {"vmap_seeds": value}}).train.vmap_seeds == value
    for section, key, values in (
        ("model", "head", config_lib.HEADS),
        ("model", "entangler", config_lib.ENTANGLERS),
        ("model", "backend", config_lib.BACKENDS),
        ("model", "backbone", config_lib.BACKBONES),
        ("train", "mode", config_lib.MODES),
        ("train", "loss", config_lib.LOSSES),
        ("train", "schedule", config_lib.SCHEDULES),
        ("train", "optimizer", config_lib.OPTIMIZERS),
        ("data", "source", config_lib.SOURCES),
        ("data", "resample", config_lib.RESAMPLES),
    ):
        for value in values:
            loaded = config_lib.from_dict({section: {key: value}})
            assert getattr(getattr(loaded, section), key) == value
    # a written config reads back equal
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(config_lib.to_dict(config)))
    assert config_lib.load(again) == config
    assert config_lib.from_dict({}) == config_lib.Config()


def test_load_names_the_file_and_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        'train:\n  batch_size: "32"\n  max_epochs: true\n  learning_rate: -1e-3\n'
        "model:\n  head: dcq\n"
    )
    with pytest.raises(ValueError) as err:
        config_lib.load(path)
    assert str(err.value).splitlines() == [
        f"{path}: 4 problems:",
        "  model.head: 'dcq' is not one of cdl, dqc",
        "  train.batch_size: '32' is not an integer >= 1",
        "  train.learning_rate: -0.001 is not a number > 0",
        "  train.max_epochs: True is not an integer >= 1",
    ]


def test_the_cli_prints_every_problem_under_one_error_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 0\n  max_epochs: -1\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"qcxr train: error: {path}: 2 problems:",
        "  train.batch_size: 0 is not an integer >= 1",
        "  train.max_epochs: -1 is not an integer >= 1",
    ]
    assert not (tmp_path / "runs").exists()
    argv = ["train", "--out", str(tmp_path / "runs"), "--set", "train.loss=mse"]
    assert main(argv) == 1
    assert "train.loss: 'mse' is not one of bce" in capsys.readouterr().err


@pytest.mark.parametrize("name", configs.names())
def test_every_bundled_config_validates(name):
    grid = read_grid(name)  # every cell's config
    assert all(c.configs for c in cells(grid, "runs/x"))


def test_choices_equal_those_of_the_modules_that_implement_them():
    from qcxr import quantum
    from qcxr.data import preprocess
    from qcxr.quantum import ansatz
    from qcxr.train import losses, state

    assert config_lib.ENTANGLERS == ansatz.ENTANGLERS == quantum.ENTANGLERS
    assert config_lib.BACKENDS == quantum.BACKENDS
    assert config_lib.LOSSES == losses.LOSSES
    assert config_lib.SCHEDULES == state.SCHEDULES
    assert config_lib.OPTIMIZERS == state.OPTIMIZERS
    assert set(config_lib.RESAMPLES) == set(preprocess._RESAMPLE)


def test_importing_config_stays_light():
    code = (
        "import sys, qcxr.config\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(eval(out.stdout)) <= {"qcxr", "__main__", "_distutils_hack"}


# ------------------------------------------------------------------------------------- grids


def test_grid_problems_name_the_cells_that_have_them():
    grid = {
        "grid": {"task": ["cxr8", "nope"], "model.head": ["cdl", "dcq"], "train.seed": [0, 1]},
        "train": {"batch_size": 0},
    }
    with pytest.raises(ValueError) as err:
        read_grid(grid)
    lines = str(err.value).splitlines()
    assert lines[:3] == [
        "grid: 3 problems:",
        "  train.batch_size: 0 is not an integer >= 1",  # every cell: the file's, no cell named
        "  model.head: 'dcq' is not one of cdl, dqc (cells with model.head='dcq')",
    ]
    assert lines[3].startswith("  task: unknown task 'nope'")
    assert lines[3].endswith("(cells with task='nope')")


def test_grid_problems_of_some_combinations_list_those_cells():
    grid = {
        "grid": {"data.crop": [224, 300], "data.resize_shortest": [256, 320], "train.seed": [0]},
    }
    with pytest.raises(ValueError) as err:
        read_grid(grid)
    assert str(err.value) == (
        "grid: data.crop: 300 must be <= data.resize_shortest (256) "
        "(cells with data.crop=300, data.resize_shortest=256)"
    )
    grid["grid"] = {
        "train.learning_rate": [1, -1],
        "model.head": ["cdl", "dqc"],
        "train.seed": [0, -1],
    }
    with pytest.raises(ValueError) as err:
        read_grid(grid)
    assert str(err.value).splitlines() == [
        "grid: 2 problems:",
        "  train.seed: -1 is not an integer >= 0 (cells with train.seed=-1)",
        "  train.learning_rate: -1 is not a number > 0 (cells with train.learning_rate=-1)",
    ]  # in the order of the first cell with each
    with pytest.raises(ValueError, match=r"grid.model.head: \[\] has no value to run"):
        read_grid({"grid": {"model.head": []}})


def test_overrides_are_checked_with_every_cell():
    grid = read_grid({"grid": {"model.head": ["cdl", "dqc"]}})
    with pytest.raises(ValueError, match=r"^grid: data.study: 3 is not a string$"):
        cells(grid, "runs/x", {"data": {"study": 3}})


@pytest.fixture
def study_and_features(tmp_path):
    return write_study_and_features(tmp_path, frozen_data(n_train=96))


def run_argv(tmp_path, grid: dict, study, features) -> tuple[list[str], object]:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "runs" / "g"
    argv = ["run", str(path), "--out", str(out), "--study", str(study),
            "--features", str(features), "--no-progress"]  # fmt: skip
    return argv, out


def test_a_bad_third_cell_fails_before_any_cell_trains(tmp_path, study_and_features, capsys):
    grid = {
        "grid": {"train.learning_rate": [0.003, 0.01, -0.01], "model.head": ["cdl"]},
        "train": {"mode": "frozen", "max_epochs": 1, "seeds": [0]},
    }
    argv, out = run_argv(tmp_path, grid, *study_and_features)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"qcxr run: error: {tmp_path / 'g.yaml'}: train.learning_rate: -0.01 is not a number > 0 "
        "(cells with train.learning_rate=-0.01)"
    )
    assert not (tmp_path / "runs").exists()  # neither out nor the first cells' experiments


def test_a_grid_axis_that_is_no_setting_fails_before_work(tmp_path, study_and_features, capsys):
    grid = {
        "grid": {"model.head": ["cdl"], "train.learning_rat": [0.01]},
        "train": {"mode": "frozen", "max_epochs": 1, "seeds": [0]},
    }
    argv, out = run_argv(tmp_path, grid, *study_and_features)
    assert main(argv) == 1
    assert "train.learning_rat: unknown setting; did you mean train.learning_rate?" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()
