"""Heads: Table II parameter counts, initialisation, and the DQC head against its definition."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from circuit_reference import numpy_expvals_and_grads
from qcxr.cli import main
from qcxr.models import ClassicalHead, DressedQuantumHead, make_head
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
    # The CDL head is Table II's "Classical Preprocess" count, named for what it is in the CDL.
    assert head_param_counts(task, "cdl") == {
        "Classical Linear Head": TABLE_II[task]["Classical Preprocess"]
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


@pytest.mark.parametrize(("labels", "layers", "entangler"), [(5, 3, "ring"), (4, 2, "chain")])
def test_dqc_head_matches_its_definition(labels: int, layers: int, entangler: str) -> None:
    """Dense(n) -> tanh * pi/2 -> circuit -> Dense(n), by hand in float64 from the stored
    parameters; the circuit from circuit_reference, which never reads qcxr."""
    head = make_head("dqc", labels, num_layers=layers, entangler=entangler)
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(3, 64)) / 8, jnp.float32)  # tanh not saturated
    # The stored parameters' names and shapes, filled with random values so that the
    # zero-initialised biases count too (test_initialisation covers the initial values).
    shapes = jax.eval_shape(head.init, jax.random.PRNGKey(0), feats)["params"]
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    f = np.asarray(feats, np.float64)
    cotangent = rng.normal(size=(3, labels))  # d loss / d logits

    pre = np.tanh(f @ p["preprocess"]["kernel"] + p["preprocess"]["bias"])
    d_expvals = cotangent @ p["postprocess"]["kernel"].T
    expvals, d_angles, d_circuit = numpy_expvals_and_grads(
        pre * np.pi / 2, p["circuit"], entangler, d_expvals
    )
    logits = expvals @ p["postprocess"]["kernel"] + p["postprocess"]["bias"]
    d_pre = d_angles * np.pi / 2 * (1 - pre**2)

    @jax.jit  # one compiled program rather than the circuit op by op
    def logits_and_grads(v):
        out, pull = jax.vjp(lambda q: head.apply({"params": q}, feats), v)
        return out, pull(jnp.asarray(cotangent, jnp.float32))[0]

    ours, grads = logits_and_grads(params)
    assert params["circuit"].shape == (layers, labels)
    np.testing.assert_allclose(ours, logits, atol=1e-5)
    np.testing.assert_allclose(grads["circuit"], d_circuit, atol=1e-4)
    np.testing.assert_allclose(grads["preprocess"]["kernel"], f.T @ d_pre, atol=1e-4)
    np.testing.assert_allclose(grads["preprocess"]["bias"], d_pre.sum(axis=0), atol=1e-4)
    np.testing.assert_allclose(grads["postprocess"]["kernel"], expvals.T @ cotangent, atol=1e-4)


def test_classical_head_shape() -> None:
    out = ClassicalHead(14).init_with_output(jax.random.PRNGKey(0), jnp.ones((3, 2048)))[0]
    assert out.shape == (3, 14)
