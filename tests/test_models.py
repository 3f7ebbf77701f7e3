"""Heads: Table II parameter counts, initialisation, and the DQC head against PennyLane."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.cli import main
from qcxr.models import ClassicalHead, DressedQuantumHead
from qcxr.models.summary import head_param_counts

# Table II of the paper.
TABLE_II = {
    "cxr8": {"Classical Preprocess": 16392, "Quantum": 24, "Classical Postprocess": 72},
    "cxr14": {"Classical Preprocess": 28686, "Quantum": 42, "Classical Postprocess": 210},
    "cxr19": {"Classical Preprocess": 38931, "Quantum": 57, "Classical Postprocess": 380},
}


@pytest.mark.parametrize("task", sorted(TABLE_II))
def test_head_counts_equal_table_ii(task: str) -> None:
    assert head_param_counts(task, "dqc") == TABLE_II[task]
    assert head_param_counts(task, "cdl") == {
        "Classical Preprocess": TABLE_II[task]["Classical Preprocess"]
    }


def test_model_summary_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "summary", "--task", "cxr19", "--head", "dqc", "--json"]) == 0
    rows = {
        r["component"]: r["parameters"] for r in json.loads(capsys.readouterr().out)["components"]
    }
    assert rows["ResNet50"] == 23_508_032
    assert rows["Quantum"] == 57
    assert rows["Total"] == 23_508_032 + 38_931 + 57 + 380


def test_initialisation() -> None:
    params = DressedQuantumHead(8).init(jax.random.PRNGKey(0), jnp.zeros((2, 2048)))["params"]
    circuit = np.asarray(params["circuit"])
    assert circuit.shape == (3, 8)
    assert circuit.min() >= 0 and circuit.max() < 2 * np.pi
    assert np.all(np.asarray(params["preprocess"]["bias"]) == 0)
    kernel = np.asarray(params["preprocess"]["kernel"])
    # LeCun normal: truncated normal with variance 1 / fan_in
    assert abs(kernel.std() * np.sqrt(2048) - 1) < 0.1


def test_dqc_head_backends_agree() -> None:
    pytest.importorskip("pennylane")
    feats = jax.random.normal(jax.random.PRNGKey(1), (4, 2048))
    sv_head = DressedQuantumHead(5, backend="statevector")
    pl_head = DressedQuantumHead(5, backend="pennylane")
    variables = sv_head.init(jax.random.PRNGKey(0), feats)

    def loss(head):
        return lambda v: jnp.mean(jax.nn.sigmoid(head.apply(v, feats)))

    np.testing.assert_allclose(
        sv_head.apply(variables, feats), pl_head.apply(variables, feats), atol=1e-5
    )
    g_sv = jax.grad(loss(sv_head))(variables)
    g_pl = jax.grad(loss(pl_head))(variables)
    for a, b in zip(jax.tree.leaves(g_sv), jax.tree.leaves(g_pl), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_classical_head_shape() -> None:
    out = ClassicalHead(14).init_with_output(jax.random.PRNGKey(0), jnp.ones((3, 2048)))[0]
    assert out.shape == (3, 14)
