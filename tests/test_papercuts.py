"""First-day paper-cuts (issue 16, item 4): each test failed before its fix."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.cli import build_parser, main, subcommand_parsers
from qcxr.config import ConfigError
from qcxr.labels import LABEL_SETS, resolve_task
from qcxr.train.grid import read_grid

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------- weights, no network


def _hub_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    # Nothing listens on port 9 (discard): every connection is refused, as on a machine with no
    # network; an empty HF_HOME, so no weights are cached.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    return env


def test_unreachable_hub_fails_at_once_with_what_to_do(tmp_path: Path) -> None:
    code = (
        "from qcxr.models.weights import resolve_resnet50_weights\n"
        "resolve_resnet50_weights('microsoft/resnet-50')\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], env=_hub_env(tmp_path), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert done.returncode != 0
    err = done.stderr
    assert "WeightsNotFoundError" in err
    assert "http://127.0.0.1:9 cannot be reached" in err and "not in the local cache" in err
    assert "--weights random" in err and "--weights DIR" in err  # what to do
    assert "Retrying" not in err  # huggingface_hub's backoff never ran
    # Before: 5 retries per file, 3 files, ~72 s. Now one refused request and the imports.
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_unreachable_hub_still_reads_the_local_cache(tmp_path: Path, monkeypatch) -> None:
    """The cache layout of huggingface_hub (models--org--name/snapshots/<commit>, refs/main):
    with the hub unreachable the cached files are read (here: a checkpoint that is not a
    ResNet-50, so the error is about its contents, not about obtaining it)."""
    from huggingface_hub import constants
    from safetensors.numpy import save_file

    from qcxr.models.weights import WeightsMismatchError, load_resnet50_weights

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--microsoft--resnet-50"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    save_file({"conv1.weight": np.zeros((2, 3, 7, 7), np.float32)}, snapshot / "model.safetensors")
    started = time.perf_counter()
    with pytest.raises(WeightsMismatchError, match="conv1.weight: shape"):
        load_resnet50_weights("microsoft/resnet-50", cache_dir=str(tmp_path))
    assert time.perf_counter() - started < 15


# ----------------------------------------------------------------------- malformed YAML

TAB = "experiment: e\ntrain:\n\tmax_epochs: 3\n"
BRACKET = "experiment: e\ngrid:\n  train.seed: [0, 1\nmodel:\n  head: dqc\n"
DUPLICATE = "task: cxr8\ntrain:\n  max_epochs: 3\n  learning_rate: 0.001\n  max_epochs: 5\n"


def _line_column(text: str, index: int) -> str:
    """The 1-based "line L, column C" of a character offset, counted here independently."""
    line = text.count("\n", 0, index) + 1
    return f"line {line}, column {index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def _expected_position(text: str) -> str:
    if text is TAB:
        return _line_column(text, text.index("\t"))
    if text is DUPLICATE:
        return _line_column(text, text.rindex("max_epochs"))  # the second one
    return _line_column(text, text.index("model:") + len("model"))  # where ':' ends the list


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (TAB, "found character '\\t' that cannot start any token"),
        (BRACKET, "expected ',' or ']', but got ':'"),
        (DUPLICATE, "key 'max_epochs' is given twice"),
    ],
    ids=["tab", "bracket", "duplicate"],
)
@pytest.mark.parametrize("reader", ["run", "train --config", "config.load", "run config.yaml"])
def test_malformed_yaml_is_one_line_with_file_line_column(
    tmp_path: Path, capsys, text: str, problem: str, reader: str
) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(text)
    if reader == "run":
        assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 1
        said = capsys.readouterr().err
    elif reader == "train --config":
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 1
        said = capsys.readouterr().err
    else:
        if reader == "run config.yaml":
            path = tmp_path / "run" / rundir.CONFIG
            path.parent.mkdir()
            path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            if reader == "config.load":
                config_lib.load(path)
            else:
                rundir.read_config(path.parent)
        said = str(caught.value) + "\n"
    assert said.count("\n") == 1, said  # one line
    assert f"{path}: {_expected_position(text)}: {problem}" in said
    assert "<unicode string>" not in said and "Traceback" not in said


def test_bracket_error_points_at_where_the_list_starts(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(BRACKET)
    with pytest.raises(ConfigError) as caught:
        read_grid(path)
    start = _line_column(BRACKET, BRACKET.index("["))
    assert f"(while parsing a flow sequence that starts at {start})" in str(caught.value)


def test_duplicate_key_reported_in_any_mapping_with_the_first_place(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    text = "grid:\n  model.head: [cdl]\n  train.seed: [0]\n  model.head: [dqc]\n"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_grid(path)
    first = _line_column(text, text.index("model.head"))
    assert f"key 'model.head' is given twice in one mapping (first at {first})" in str(caught.value)
    assert yaml.safe_load(text)["grid"]["model.head"] == ["dqc"]  # what PyYAML alone does


def test_valid_yaml_reads_as_pyyaml_reads_it(tmp_path: Path) -> None:
    """Anchors, merge keys (which may be overridden), lists and an empty file: as yaml.safe_load."""
    text = (
        "base: &b {x: 1, y: [1, 2]}\nother:\n  <<: *b\n  x: 2\nlist: [a, b]\n"
        "same_value: {a: 1, b: 1}\n"
    )
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert config_lib.read_yaml(path) == yaml.safe_load(text)
    path.write_text("# only a comment\n")
    assert config_lib.read_yaml(path) == {}
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings at the top level"):
        config_lib.read_yaml(path)


def test_bundled_configs_read_as_pyyaml_reads_them() -> None:
    from qcxr import configs

    for name in configs.names():
        path = configs.path(name)
        assert config_lib.read_yaml(path) == yaml.safe_load(path.read_text()), name


# ----------------------------------------------------------------------- error prefixes


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["labels", "stats", "{tmp}/missing.csv"], "qcxr labels stats: error: "),
        (["cache", "build", "--cache", "{tmp}/cache"], "qcxr cache build: error: "),
        (["bench", "table3", "--config", "{tmp}/tab.yaml"], "qcxr bench table3: error: "),
        (["model", "summary", "--task", "cxr9"], "qcxr model summary: error: "),
        (["run", "{tmp}/tab.yaml"], "qcxr run: error: "),
    ],
)
def test_error_prefix_names_the_whole_subcommand(
    tmp_path: Path, capsys, argv: list[str], prefix: str
) -> None:
    (tmp_path / "tab.yaml").write_text(TAB)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(prefix) and err.count("\n") == 1, err


# ----------------------------------------------------------------------- task names


@pytest.mark.parametrize("spelled", ["CXR14", "Cxr14", "CXR-14", "cxr14"])
def test_task_names_of_builtin_sets_in_any_case(tmp_path: Path, spelled: str) -> None:
    assert resolve_task(spelled).labels == tuple(LABEL_SETS["cxr14"])
    config = config_lib.from_dict({"task": spelled})
    assert config.task == "cxr14"  # one name: one run directory, one name in every record
    run = rundir.config_run_path(tmp_path, config)
    assert run == tmp_path / "cxr14" / config.model.head / "seed-0"
    path = tmp_path / "c.yaml"
    path.write_text(f"task: {spelled}\n")
    assert config_lib.load(path).task == "cxr14"


def test_task_option_in_any_case(tmp_path: Path, capsys) -> None:
    assert main(["model", "summary", "--task", "CXR8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "cxr8" and out["labels"] == len(LABEL_SETS["cxr8"])


def test_an_explicit_list_keeps_its_name() -> None:
    config = config_lib.from_dict({"task": "MyTask", "labels": ["Mass", "Edema"]})
    assert (config.task, config.labels) == ("MyTask", ("Mass", "Edema"))
    # A list under a built-in set's name (any case) must be that set.
    with pytest.raises(ConfigError, match="'CXR8' is a built-in label set"):
        config_lib.from_dict({"task": "CXR8", "labels": ["Mass", "Edema"]})
    spelled_out = config_lib.from_dict({"task": "CXR8", "labels": LABEL_SETS["cxr8"]})
    assert spelled_out.task == "cxr8"


# ----------------------------------------------------------------------- help texts

OWNED = ("qcxr demo", "qcxr model", "qcxr model summary")


def _without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [
        action.option_strings[0] if action.option_strings else action.dest
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]


def test_every_option_of_every_subcommand_has_help() -> None:
    parsers = {p.prog: p for p in subcommand_parsers(build_parser())}
    assert set(OWNED) <= set(parsers)
    missing = {prog: _without_help(parser) for prog, parser in parsers.items()}
    assert {prog: names for prog, names in missing.items() if names} == {}
    demo = parsers["qcxr demo"].format_help()
    assert "synthetic MIMIC images, the external test set (300)" in demo


# ----------------------------------------------------------------------- model summary


@pytest.mark.parametrize("task", ["cxr8", "cxr19"])
def test_model_summary_names_the_cdl_head_for_what_it_is(capsys, task: str) -> None:
    n = len(LABEL_SETS[task])
    assert main(["model", "summary", "--task", task, "--head", "cdl", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["components"]
    assert [r["component"] for r in rows] == ["ResNet50", "Classical Linear Head", "Total"]
    assert rows[1]["parameters"] == 2048 * n + n  # one Dense(n) on the 2048 pooled features
    assert main(["model", "summary", "--task", task, "--head", "dqc", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["components"]
    names = [r["component"] for r in rows]
    assert names == [
        "ResNet50",
        "Classical Preprocess",
        "Quantum",
        "Classical Postprocess",
        "Total",
    ]


# ----------------------------------------------------------------------- packaging


def _license_warnings(pyproject: Path) -> list[str]:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), pyproject)
    return [str(w.message) for w in caught if "license" in str(w.message).lower()]


def test_install_metadata_gives_no_license_deprecation(tmp_path: Path) -> None:
    assert _license_warnings(ROOT / "pyproject.toml") == []
    # The check can fail: the old table form warns under the same setuptools.
    old = (
        (ROOT / "pyproject.toml").read_text().replace('license = "MIT"', 'license = {text = "MIT"}')
    )
    assert old != (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(old)
    (tmp_path / "README.md").write_text("x")
    assert any(
        "as a TOML table is deprecated" in w for w in _license_warnings(tmp_path / "pyproject.toml")
    )
