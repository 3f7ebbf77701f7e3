"""Label sets beyond the paper: built-in nih20 and cxr26, explicit lists, their errors and CLIs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from qcxr import config as config_lib
from qcxr.cli import build_parser, main
from qcxr.data.datasets import NIHCXRLT, label_stats, nih_label_file
from qcxr.labels import (
    CXR19,
    LABEL_SETS,
    TASKS,
    canonical,
    resolve_task,
    task_labels,
)

# The 26 CXR-LT 2023 classes as the brief of issue 11 lists them (MIMIC spellings).
CXR_LT_2023 = [
    "Support Devices",
    "Lung Opacity",
    "Cardiomegaly",
    "Pleural Effusion",
    "Atelectasis",
    "Pneumonia",
    "Edema",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Consolidation",
    "Pneumothorax",
    "Fracture",
    "Calcification of the Aorta",
    "Tortuous Aorta",
    "Subcutaneous Emphysema",
    "Lung Lesion",
    "Pneumomediastinum",
    "Pneumoperitoneum",
    "Pleural Other",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural Thickening",
]
NIH_LACKS = [
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lesion",
    "Lung Opacity",
    "Pleural Other",
    "Support Devices",
]


def test_builtin_sets_keep_the_paper_tasks_and_qubits():
    assert list(TASKS) == ["cxr8", "cxr14", "cxr19"]
    assert list(LABEL_SETS)[:3] == list(TASKS) and list(LABEL_SETS)[3:] == ["nih20", "cxr26"]
    # Each set extends the previous one: label i keeps qubit i across tasks.
    sets = list(LABEL_SETS.values())
    assert all(big[: len(small)] == small for small, big in zip(sets, sets[1:], strict=False))
    nih_columns = pd.read_csv(nih_label_file("val"), nrows=0).columns[1:-1]
    assert sorted(LABEL_SETS["nih20"]) == sorted(nih_columns)
    assert LABEL_SETS["nih20"] == [*CXR19, "No Finding"]
    assert len(LABEL_SETS["cxr26"]) == 26
    assert LABEL_SETS["cxr26"] == [canonical(n) for n in LABEL_SETS["cxr26"]]
    assert sorted(LABEL_SETS["cxr26"]) == sorted(canonical(n) for n in CXR_LT_2023)
    assert LABEL_SETS["cxr26"][20:] == NIH_LACKS
    assert task_labels("CXR26") == LABEL_SETS["cxr26"]


def test_explicit_lists_are_canonical_and_checked():
    task = resolve_task("mine", ["Pleural Effusion", "Lung Lesion", "Finding 07"])
    assert task.name == "mine" and task.labels == ("Effusion", "Lesion", "Finding 07")
    assert len(task) == 3
    assert resolve_task("cxr8", TASKS["cxr8"]).labels == tuple(TASKS["cxr8"])
    with pytest.raises(ValueError, match=r"duplicate label\(s\): Effusion \(as 'Effusion', "):
        resolve_task("mine", ["Effusion", "Mass", "Pleural Effusion"])
    with pytest.raises(ValueError, match=r"duplicate label\(s\): Mass \(as 'Mass', 'Mass'\)"):
        resolve_task("mine", ["Mass", "Mass"])
    with pytest.raises(ValueError, match="built-in label set"):
        resolve_task("cxr8", ["Mass"])
    with pytest.raises(ValueError, match="expected a list"):
        resolve_task("mine", "Mass")
    with pytest.raises(ValueError, match="non-empty strings"):
        resolve_task("mine", ["Mass", " "])
    for bad in ("a/b", "summary", " x", ""):
        with pytest.raises(ValueError, match="task name"):
            resolve_task(bad, ["Mass"])


def test_unknown_task_lists_the_builtin_sets():
    with pytest.raises(ValueError) as err:
        resolve_task("cxr9")
    for name in LABEL_SETS:
        assert name in str(err.value)


def test_config_takes_a_named_list_and_writes_it_back(tmp_path):
    config = config_lib.from_dict({"task": "my3", "labels": ["Mass", "Fracture", "Finding 01"]})
    assert config.labels == ("Mass", "Fracture", "Finding 01")
    assert config_lib.task_of(config).labels == config.labels
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_lib.to_dict(config)))
    assert config_lib.load(path) == config
    assert config_lib.Config().model.backend == "auto"
    assert config_lib.Config().data.source == "auto"
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        config_lib.from_dict({"task": "nope"})
    with pytest.raises(ValueError, match="give your list another name"):
        config_lib.from_dict({"labels": ["Mass", "Fracture"]})  # task left at cxr8
    with pytest.raises(ValueError, match="duplicate"):
        config_lib.from_dict({"task": "d", "labels": ["Mass", "Mass"]})


def test_cxr26_on_nih_files_names_the_file_and_the_missing_labels():
    path = nih_label_file("val")
    with pytest.raises(ValueError) as err:
        NIHCXRLT(path, path.parent, "cxr26", check_files=False)
    message = str(err.value)
    assert message.startswith(f"{path}: lacks task cxr26 label(s)")
    assert all(repr(name) in message for name in NIH_LACKS)
    assert "'Lesion' (or 'Lung Lesion')" in message and "'Mass'" not in message
    kept = NIHCXRLT(path, path.parent, "cxr26", check_files=False, allow_missing_labels=True)
    assert kept.missing_labels == NIH_LACKS and kept.labels.shape[1] == 26
    with pytest.raises(ValueError, match=re.escape(f"{path}: lacks task l2 label(s) ['Foo']")):
        label_stats([path], resolve_task("l2", ["Mass", "Foo"]))


def test_nih20_stats_count_no_finding(capsys):
    table = label_stats([nih_label_file("val")], "nih20")
    assert len(table) == 20 and table.index[0] == "No Finding"
    argv = ["labels", "stats", str(nih_label_file("val")), "--labels", "Mass,No Finding", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "labels2" and set(out["counts"]) == {"Mass", "No Finding"}
    assert out["counts"]["No Finding"]["Val"] == int(table.loc["No Finding", "Val"])


def test_model_summary_counts_for_any_n(tmp_path, capsys):
    assert main(["model", "summary", "--task", "cxr26", "--json"]) == 0
    rows = {
        r["component"]: r["parameters"] for r in json.loads(capsys.readouterr().out)["components"]
    }
    n = 26
    assert rows["Classical Preprocess"] == 2048 * n + n
    assert rows["Quantum"] == 3 * n and rows["Classical Postprocess"] == n * n + n
    labels = tmp_path / "labels.txt"
    labels.write_text("# my list\nMass\n\nFracture\nFinding 01\n")
    assert main(["model", "summary", "--labels-file", str(labels), "--task", "my3"]) == 0
    out = capsys.readouterr().out
    assert "my3 (3 labels) / dqc" in out and f"{3 * 3:>12,}" in out
    names = ",".join(f"L{k}" for k in range(45))  # traced on the backend "auto" picks for n = 45
    assert main(["model", "summary", "--labels", names, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "labels45" and out["labels"] == 45
    assert out["components"][2] == {"component": "Quantum", "parameters": 3 * 45}
    assert main(["model", "summary", "--task", "cxr9"]) == 1
    assert "nih20, cxr26" in capsys.readouterr().err


def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_cli_task_and_backend_choices_come_from_the_constants(capsys):
    from qcxr.quantum import BACKENDS

    parser = build_parser()
    commands = _subparsers(parser)
    parsers = [commands["synth"], commands["train"], commands["demo"], commands["features"]]
    parsers += [_subparsers(commands["labels"])["stats"], _subparsers(commands["model"])["summary"]]
    parsers += [_subparsers(commands["cache"])["build"]]
    for sub in parsers:
        task = next(a for a in sub._actions if "--task" in a.option_strings)
        assert ", ".join(LABEL_SETS) in task.help, sub.prog
    train = commands["train"]
    backend = next(a for a in train._actions if "--backend" in a.option_strings)
    assert list(backend.choices) == list(BACKENDS) and "auto" in BACKENDS
    assert parser.parse_args(["train", "--backend", "auto"]).backend == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--backend", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cxr-lt", "labels45"])
def test_beyond_paper_grid_files(name):
    from qcxr.train.grid import cells, read_grid

    found = cells(read_grid(f"configs/{name}.yaml"), f"runs/{name}")
    tasks = {len(config_lib.task_of(c.configs[0])) for c in found}
    assert tasks == ({20, 26} if name == "cxr-lt" else {45})
    assert {c.configs[0].model.backend for c in found} == {"auto"}
