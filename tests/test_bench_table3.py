"""Table III harness: every installed framework runs n = 4 end to end; the tables add up."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from qcxr.bench import table3, tables
from qcxr.bench.cells import Cell, Plan
from qcxr.bench.machine import Machine

# What each framework needs, written out here rather than read from the harness.
NEEDS = {
    "qcxr": ("jax", "flax", "optax"),
    "pennylane-jax": ("jax", "flax", "optax", "pennylane"),
    "pennylane-torch": ("torch", "transformers", "pennylane"),
    "pennylane-tf": ("tensorflow", "pennylane"),
}


def installed(framework: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in NEEDS[framework])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def harness(out: Path, *extra: str) -> int:
    # graph-mode TF keeps the test quick; XLA is the default and is what benchmarks/ records.
    return table3.main(
        ["--labels", "4", "--backbone", "none", "--warmup", "1", "--steps", "2"]
        + ["--isolate", "framework", "--tf-mode", "graph", "--out", str(out), *extra]
    )


@pytest.mark.parametrize("framework", list(NEEDS))
def test_harness_times_every_installed_framework(framework, tmp_path, capsys):
    code = harness(tmp_path, "--frameworks", framework)
    summary = read_csv(tmp_path / "summary-none.csv")
    assert {(r["framework"], r["head"], r["n"]) for r in summary} == {
        (framework, "cdl", "4"),
        (framework, "dqc", "4"),
    }
    if not installed(framework):
        assert code == 0 and {r["status"] for r in summary} == {"skipped"}
        assert "not installed" in capsys.readouterr().err
        return
    assert code == 0, [r["reason"] for r in summary]
    assert {r["status"] for r in summary} == {"ok"}
    for row in summary:
        assert float(row["mean_s"]) > 0 and float(row["first_step_s"]) > 0
        assert float(row["peak_rss_mb"]) > 50  # a Python process with a framework loaded
        assert math.isclose(float(row["min_per_epoch"]), float(row["mean_s"]) * 2454 / 60)
    steps = read_csv(tmp_path / "steps-none.csv")
    for head in ("cdl", "dqc"):
        own = [r for r in steps if r["head"] == head]
        assert [r["phase"] for r in own] == ["warmup", "timed", "timed"]
        assert all(float(r["seconds"]) > 0 for r in own)
        timed = [float(r["seconds"]) for r in own if r["phase"] == "timed"]
        row = next(r for r in summary if r["head"] == head)
        assert math.isclose(float(row["mean_s"]), np.mean(timed))
        assert math.isclose(float(row["std_s"]), np.std(timed, ddof=1))
    text = (tmp_path / "table3-none.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| n=4 | DQC |")][0]
    assert "±" in table and framework in text
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    # A second run finds every cell measured and starts no worker.
    before = {p.name: p.read_text() for p in (tmp_path / "cells").iterdir()}
    assert harness(tmp_path, "--frameworks", framework) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "cells").iterdir()} == before
    assert "all cells already measured" in capsys.readouterr().err


def test_worker_above_the_memory_limit_is_killed_and_reported(tmp_path):
    if not installed("pennylane-torch"):
        pytest.skip("torch not installed")
    code = harness(tmp_path, "--frameworks", "pennylane-torch", "--heads", "cdl",
                   "--max-rss-gib", "0.03")  # fmt: skip
    (row,) = read_csv(tmp_path / "summary-none.csv")
    assert code == 0 and row["status"] == "memory" and "0.03 GiB" in row["reason"]


def test_framework_missing_from_its_interpreter_is_skipped(tmp_path, capsys):
    """An interpreter without torch (or none at all): a skipped row and a message, exit 0."""
    system = shutil.which("python3.11") or shutil.which("python3")
    bare = system and not Path(system).resolve().is_relative_to(Path(__file__).parents[1])
    for python in ([system] if bare else []) + [str(tmp_path / "no-such-python")]:
        code = harness(tmp_path / "out", "--frameworks", "pennylane-torch", "--reuse", "none",
                       "--python-pennylane-torch", python)  # fmt: skip
        summary = read_csv(tmp_path / "out" / "summary-none.csv")
        if python == system and installed_in(system, "torch"):
            continue
        assert code == 0 and {r["status"] for r in summary} == {"skipped"}
        assert "pennylane-torch: skipped, not installed" in capsys.readouterr().err


def installed_in(python: str, module: str) -> bool:
    import subprocess

    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def fake_result(framework: str, head: str, n: int, times: list[float]) -> dict:
    return {
        "framework": framework, "head": head, "num_labels": n, "backbone": "resnet50",
        "batch": 32, "warmup": 10, "steps": len(times), "status": "ok", "step_s": times,
        "warmup_s": [5.0] + times[:1] * 9, "first_step_s": 5.0, "build_s": 1.0,
        "peak_rss_mb": 2048.0, "versions": {"python": "3"}, "python": "py", "device": "cpu",
    }  # fmt: skip


def test_tables_report_paper_style_speedups_and_epoch_minutes():
    results = [
        fake_result("pennylane-torch", "dqc", 19, [1.8, 2.0]),
        fake_result("qcxr", "dqc", 19, [0.4, 0.6]),
        fake_result("qcxr", "cdl", 19, [0.45, 0.45]),
        {**fake_result("pennylane-tf", "dqc", 19, []), "status": "timeout", "reason": "slow"},
    ]
    results = [Cell.from_json(r) for r in results]
    rows = tables.summary_rows(results, batches_per_epoch=2454)
    torch_row = next(r for r in rows if r["framework"] == "pennylane-torch")
    assert torch_row["speedup_qcxr"] == pytest.approx(1.9 / 0.5)
    assert torch_row["min_per_epoch"] == pytest.approx(1.9 * 2454 / 60)
    plan = Plan(
        frameworks=("pennylane-tf", "pennylane-torch", "qcxr"), heads=("cdl", "dqc"),
        labels=(19,), backbone="resnet50", batch=32, warmup=10, steps=2, batches_per_epoch=2454,
    )  # fmt: skip
    machine = Machine(cpu="x", logical_cpus=2, memory_gib=1.0, platform="p", date="d")
    text = tables.markdown(results, machine, plan)
    assert "| CXR-19 | DQC | timeout | 1.90 ± 0.14 | 0.50 ± 0.14 |" in text
    assert "3.80x (74%)" in text  # 1 - 0.5/1.9, the paper's "% faster"
    assert "| CXR-19 | — | — | 1.11x |" in text  # qcxr DQC / CDL only: the others lack a CDL
    assert "pennylane-tf DQC CXR-19: timeout: slow" in text
    json.dumps(rows)  # the --json output must serialise


def numpy_expvals(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Independent reference: dense statevector, wire 0 = most significant bit (PennyLane's)."""
    batch, n = x.shape
    out = np.zeros((batch, n))
    for b in range(batch):
        psi = np.zeros((2,) * n)
        psi[(0,) * n] = 1.0

        def apply(gate, wire, psi):
            return np.moveaxis(np.tensordot(gate, psi, axes=([1], [wire])), 0, wire)

        def ry(theta):
            c, s = np.cos(theta / 2), np.sin(theta / 2)
            return np.array([[c, -s], [s, c]])

        for i in range(n):
            psi = apply(np.array([[1, 1], [1, -1]]) / np.sqrt(2), i, psi)
            psi = apply(ry(x[b, i]), i, psi)
        for layer in weights:
            for i in range(n):
                psi = apply(ry(layer[i]), i, psi)
            for i in range(n):
                j = (i + 1) % n
                flipped = psi.copy()
                idx = [slice(None)] * n
                idx[i] = 1
                flipped[tuple(idx)] = np.flip(psi[tuple(idx)], axis=j - (j > i))
                psi = flipped
        probs = psi**2
        for i in range(n):
            out[b, i] = probs.take(0, axis=i).sum() - probs.take(1, axis=i).sum()
    return out


@pytest.mark.parametrize("interface", ["jax", "torch", "tf"])
def test_pennylane_circuit_of_every_framework_is_the_dqc_circuit(interface):
    """The three PennyLane frameworks run the circuit of `qcxr.quantum` (checked against numpy)."""
    module = {"jax": "jax", "torch": "torch", "tf": "tensorflow"}[interface]
    lib = pytest.importorskip(module)
    pytest.importorskip("pennylane")
    from qcxr.bench.frameworks.circuit import dqc_qnode

    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (3, 3)).astype(np.float32)
    weights = rng.uniform(0, 2 * np.pi, (3, 3)).astype(np.float32)
    convert = {"jax": "asarray", "torch": "tensor", "tf": "constant"}[interface]
    convert = getattr(lib.numpy if interface == "jax" else lib, convert)
    circuit = dqc_qnode(3, interface=interface)
    values = circuit(convert(x), convert(weights))
    got = np.stack([np.asarray(v) for v in values], axis=-1)
    np.testing.assert_allclose(
        got, numpy_expvals(x.astype(float), weights.astype(float)), atol=1e-5
    )


def test_qcxr_simulator_computes_the_same_circuit():
    """`qcxr` and the PennyLane frameworks time the same function of (x, weights)."""
    from qcxr import quantum

    rng = np.random.default_rng(1)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (4, 4)).astype(np.float32)
    weights = rng.uniform(0, 2 * np.pi, (3, 4)).astype(np.float32)
    got = np.asarray(quantum.dqc_expvals(x, weights, entangler="ring", backend="statevector"))
    np.testing.assert_allclose(
        got, numpy_expvals(x.astype(float), weights.astype(float)), atol=1e-5
    )
