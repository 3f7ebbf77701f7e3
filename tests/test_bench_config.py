"""`qcxr bench table3 --config` and `qcxr bench quantum --config`: the YAML's bench: and train:
sections give the defaults, explicit options win; choices come from the constants."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest

from qcxr import config
from qcxr.bench import quantum, table3
from qcxr.bench.frameworks import BACKBONES, FRAMEWORKS
from qcxr.quantum import BACKENDS, ENTANGLERS

YAML = """\
train:
  batch_size: 4
  learning_rate: 0.001
model:
  num_layers: 2
  entangler: chain
bench:
  warmup: 2
  steps: 3
  batches_per_epoch: 100
"""


@pytest.fixture
def yaml_config(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(YAML)
    return path


def parsed(add_arguments, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_a_grid_file_or_bundled_name_is_a_config_too(tmp_path):
    """configs/paper.yaml is a grid file (experiment:, grid:); its base settings count."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("experiment: g\ngrid:\n  model.head: [cdl, dqc]\n" + YAML)
    plan = table3.plan_of(parsed(table3.add_arguments, ["--config", str(grid)]))
    assert (plan.batch, plan.warmup, plan.steps, plan.batches_per_epoch) == (4, 2, 3, 100)
    plan = table3.plan_of(parsed(table3.add_arguments, ["--config", "paper"]))
    assert (plan.batch, plan.warmup, plan.steps, plan.batches_per_epoch) == (32, 10, 30, 2454)


def test_table3_config_sets_the_plan_and_options_override_it(yaml_config):
    plan = table3.plan_of(parsed(table3.add_arguments, ["--config", str(yaml_config)]))
    assert (plan.batch, plan.warmup, plan.steps, plan.batches_per_epoch) == (4, 2, 3, 100)
    argv = ["--config", str(yaml_config), "--steps", "7", "--batch", "8"]
    plan = table3.plan_of(parsed(table3.add_arguments, argv))
    assert (plan.batch, plan.warmup, plan.steps, plan.batches_per_epoch) == (8, 2, 7, 100)
    plan = table3.plan_of(parsed(table3.add_arguments, []))
    paper = config.Config()
    assert (plan.batch, plan.warmup, plan.steps, plan.batches_per_epoch) == (
        paper.train.batch_size, paper.bench.warmup, paper.bench.steps,
        paper.bench.batches_per_epoch,
    )  # fmt: skip


def test_table3_measures_with_the_config_of_the_yaml(yaml_config, tmp_path, capsys):
    """The cheapest real cell (qcxr CDL, no backbone, n = 2) measured as the YAML says."""
    out = tmp_path / "out"
    argv = ["--config", str(yaml_config), "--frameworks", "qcxr", "--heads", "cdl"]
    assert table3.main(argv + ["--labels", "2", "--backbone", "none", "--out", str(out)]) == 0
    cell = json.loads((out / "cells" / "qcxr_cdl_n2_none_b4.json").read_text())
    assert cell["status"] == "ok", cell
    assert (cell["batch"], cell["warmup"], cell["steps"]) == (4, 2, 3)
    assert (len(cell["warmup_s"]), len(cell["step_s"])) == (2, 3)
    with open(out / "summary-none.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert math.isclose(float(row["min_per_epoch"]), float(row["mean_s"]) * 100 / 60)
    text = (out / "table3-none.md").read_text()
    assert "batch 4," in text and "Mean ± std over 3 timed steps after 2 warm-up steps" in text
    assert "Minutes per epoch of 100 batches" in text and "†" not in text.split("\n\n")[2]
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"


def test_quantum_config_gives_the_defaults_and_options_override_it(yaml_config):
    args = quantum.resolved(parsed(quantum.add_arguments, ["--config", str(yaml_config)]))
    assert (args.batch, args.warmup, args.steps, args.layers, args.entangler) == (
        4, 2, 3, 2, "chain",
    )  # fmt: skip
    assert args.learning_rate == 1e-3
    argv = ["--config", str(yaml_config), "--warmup", "5", "--entangler", "ring"]
    args = quantum.resolved(parsed(quantum.add_arguments, argv))
    assert (args.warmup, args.steps, args.entangler) == (5, 3, "ring")
    args = quantum.resolved(parsed(quantum.add_arguments, []))
    paper = config.Config()
    assert (args.batch, args.warmup, args.steps, args.layers, args.entangler) == (
        paper.train.batch_size, paper.bench.warmup, paper.bench.steps, paper.model.num_layers,
        paper.model.entangler,
    )  # fmt: skip


def test_quantum_measures_with_the_config_of_the_yaml(yaml_config, tmp_path, capsys):
    argv = ["--config", str(yaml_config), "--qubits", "2", "--backends", "cdl"]
    args = parsed(quantum.add_arguments, argv + ["--out", str(tmp_path), "--json"])
    assert quantum.run(args) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["steps"] == 3 and "error" not in row
    (md,) = tmp_path.glob("quantum-*.md")
    text = md.read_text()
    assert "(B=4, 2048) -> DQC head (L=2, chain)" in text
    assert "2 warm-up then 3 timed steps" in text


def test_choices_come_from_the_constants():
    table3_parser = argparse.ArgumentParser()
    table3.add_arguments(table3_parser)
    choices = {a.dest: a.choices for a in table3_parser._actions}
    assert tuple(choices["heads"]) == config.HEADS
    assert tuple(choices["frameworks"]) == tuple(FRAMEWORKS)
    assert tuple(choices["backbone"]) == BACKBONES
    quantum_parser = argparse.ArgumentParser()
    quantum.add_arguments(quantum_parser)
    choices = {a.dest: a.choices for a in quantum_parser._actions}
    assert tuple(choices["entangler"]) == ENTANGLERS
    assert set(BACKENDS) < set(choices["backends"])
    from qcxr.bench import frameworks

    assert frameworks.HEADS is config.HEADS
