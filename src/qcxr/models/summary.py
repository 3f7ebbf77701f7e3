"""Parameter counts per component, in the rows of Table II."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qcxr.labels import Task, resolve_task
from qcxr.models.heads import make_head

# Parameter name in the head -> component name, per head. The DQC's rows are Table II's (its
# "Quantum Preprocess" row, 3n angles, is the circuit: "Quantum" here). The CDL head is one
# linear layer of size n that is the whole classification head (Sec. III-C.1, Fig. 1); Table II
# counts it in the "Classical Preprocess" row it shares with the DQC, but for the CDL nothing
# follows it, so it is named for what it is. The classical preprocessing layer proper is the
# first part of the dressed quantum circuit (Sec. III-C.2, Fig. 2).
COMPONENTS = {
    "cdl": {"preprocess": "Classical Linear Head"},
    "dqc": {
        "preprocess": "Classical Preprocess",
        "circuit": "Quantum",
        "postprocess": "Classical Postprocess",
    },
}


def head_param_counts(task: str | Task, head: str, num_layers: int = 3) -> dict[str, int]:
    """{component: trainable parameters} for a head, from its initialised shapes.

    Any number of labels n: the shapes are traced (not computed) on the circuit backend
    "auto" picks for n, which can trace large n.
    """
    from qcxr.quantum.cost import choose_backend

    n = len(resolve_task(task))
    backend = choose_backend(n, num_layers, "ring")
    module = make_head(head, n, num_layers=num_layers, backend=backend)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 2048)))
    params = shapes["params"]
    return {
        label: sum(int(leaf.size) for leaf in jax.tree.leaves(params[name]))
        for name, label in COMPONENTS[head].items()
        if name in params
    }


def model_summary(task: str | Task, head: str, num_layers: int = 3) -> list[dict]:
    """Rows (component, parameters) for the whole model: ResNet50 then the head's parts."""
    from qcxr.models.resnet import resnet50_param_count

    rows = [{"component": "ResNet50", "parameters": resnet50_param_count()}]
    rows += [
        {"component": k, "parameters": v}
        for k, v in head_param_counts(task, head, num_layers).items()
    ]
    rows.append({"component": "Total", "parameters": sum(r["parameters"] for r in rows)})
    return rows
