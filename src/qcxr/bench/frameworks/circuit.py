"""The DQC circuit as a PennyLane QNode, shared by the three PennyLane frameworks.

Same circuit as `qcxr.quantum.dqc_expvals` (docs/ARCHITECTURE.md, "The quantum core"): H and
RY(x_i) on every wire, then per layer RY(w[l, i]) on every wire and a CNOT ring; <Z_i> on every
wire. default.qubit with backprop, the paper's "best differentiation method" (Sec. III-D).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def ring_pairs(num_wires: int) -> list[tuple[int, int]]:
    """CNOT(i, (i+1) % n) for every i; one CNOT(0, 1) for two wires, none for one."""
    if num_wires == 1:
        return []
    if num_wires == 2:
        return [(0, 1)]
    return [(i, (i + 1) % num_wires) for i in range(num_wires)]


def dqc_qnode(num_wires: int, interface: str, device: str = "default.qubit") -> Callable[..., Any]:
    """QNode (x (B, n), weights (L, n)) -> tuple of n <Z_i> arrays of shape (B,)."""
    import pennylane as qml

    dev = qml.device(device, wires=num_wires)
    pairs = ring_pairs(num_wires)

    @qml.qnode(dev, interface=interface, diff_method="backprop")
    def circuit(x, weights):
        for i in range(num_wires):
            qml.Hadamard(wires=i)
            qml.RY(x[..., i], wires=i)
        for layer in range(weights.shape[0]):
            for i in range(num_wires):
                qml.RY(weights[layer, i], wires=i)
            for a, b in pairs:
                qml.CNOT(wires=[a, b])
        return [qml.expval(qml.PauliZ(i)) for i in range(num_wires)]

    return circuit
