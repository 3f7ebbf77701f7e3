"""Table III plan and cell records: validation, the file format, and which cells are reused."""

from __future__ import annotations

import json

import pytest

from qcxr.bench.cells import Cell, Plan, read_cell, reusable, write_cell


def plan(**changes) -> Plan:
    fields = dict(
        frameworks=("qcxr",), heads=("cdl", "dqc"), labels=(8, 14), backbone="none", batch=32,
        warmup=10, steps=30, batches_per_epoch=2454,
    )  # fmt: skip
    return Plan(**{**fields, **changes})


def cell(**changes) -> Cell:
    fields = dict(
        framework="qcxr", head="cdl", num_labels=8, backbone="none", batch=32, warmup=10,
        steps=30, options={}, python="py", versions={"python": "3.11"}, status="ok",
        warmup_s=[1.0] + [0.1] * 9, step_s=[0.1] * 30, first_step_s=1.0, peak_rss_mb=100.0,
    )  # fmt: skip
    return Cell(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(labels=(8, 0)), "--labels [8, 0]: every n must be >= 1"),
        (dict(batch=0), "--batch 0: must be >= 1"),
        (dict(warmup=0), "--warmup 0: must be >= 1 (the first step compiles)"),
        (dict(steps=0), "--steps 0: must be >= 1"),
        (dict(batches_per_epoch=0), "--batches-per-epoch 0: must be >= 1"),
    ],
)
def test_plan_names_the_bad_option(changes, message):
    with pytest.raises(ValueError) as err:
        plan(**changes)
    assert str(err.value) == message


def test_plan_cells_in_table_order_and_names():
    asked = plan(frameworks=("qcxr", "pennylane-jax"), labels=(14, 8))
    order = ("pennylane-jax", "qcxr")
    assert list(asked.cells(order)) == [
        ("pennylane-jax", "cdl", 14), ("qcxr", "cdl", 14), ("pennylane-jax", "dqc", 14),
        ("qcxr", "dqc", 14), ("pennylane-jax", "cdl", 8), ("qcxr", "cdl", 8),
        ("pennylane-jax", "dqc", 8), ("qcxr", "dqc", 8),
    ]  # fmt: skip
    assert asked.name("qcxr", "dqc", 8) == "qcxr_dqc_n8_none_b32"
    assert plan(tf_mode="graph").options("pennylane-tf") == {"tf_mode": "graph"}
    assert plan(tf_mode="graph").options("qcxr") == {}


def test_cell_file_keeps_the_worker_key_order_and_omits_what_is_unset(tmp_path):
    path = tmp_path / "c.json"
    write_cell(path, cell())
    data = json.loads(path.read_text())
    assert list(data) == [
        "framework", "head", "num_labels", "backbone", "batch", "warmup", "steps", "options",
        "python", "versions", "warmup_s", "step_s", "first_step_s", "status", "peak_rss_mb",
    ]  # fmt: skip
    assert read_cell(path) == cell()
    failed = Cell(**plan().settings("qcxr", "dqc", 14), python="py", status="memory", reason="r")
    write_cell(path, failed)
    assert list(json.loads(path.read_text())) == [
        "framework", "head", "num_labels", "backbone", "batch", "warmup", "steps", "python",
        "status", "reason",
    ]  # fmt: skip
    assert read_cell(tmp_path / "absent.json") is None


def test_cell_statistics():
    measured = cell(step_s=[1.0, 2.0, 3.0])
    assert measured.mean_s == 2.0 and measured.std_s == 1.0 and measured.timed_steps == 3
    assert measured.per_epoch_min(60) == pytest.approx(2.0)
    assert cell(step_s=[0.5]).std_s == 0.0
    empty = cell(step_s=[], status="timeout")
    assert empty.mean_s is None and empty.std_s is None and empty.timed_steps == 30


def test_a_foreign_cell_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**cell().to_json(), "colour": "red"}))
    with pytest.raises(ValueError, match=r"c\.json: unknown fields \['colour'\]"):
        read_cell(path)
    path.write_text(json.dumps({"framework": "qcxr"}))
    with pytest.raises(ValueError, match=r"c\.json: .*missing"):
        read_cell(path)
    with pytest.raises(ValueError, match="cell status 'fine'"):
        cell(status="fine")


@pytest.mark.parametrize(
    "found, reuse, kept",
    [
        (cell(), "same", True),
        (cell(), "any", True),
        (cell(), "none", False),
        (None, "same", False),
        (None, "any", False),
        (cell(steps=5, step_s=[0.1] * 5), "same", False),  # other timed steps
        (cell(warmup=2), "same", False),  # other warm-up
        (cell(steps=5, step_s=[0.1] * 5), "any", True),
        (cell(status="memory"), "same", False),
        (cell(status="memory"), "any", True),
        (cell(status="timeout"), "any", True),
        (cell(status="error"), "any", False),
        (cell(status="skipped"), "any", False),
        (cell(options={"tf_mode": "graph"}), "same", True),  # options are not compared
    ],
)
def test_reuse_keeps_finished_cells_measured_as_planned(found, reuse, kept):
    assert reusable(found, plan(), reuse) is kept
