"""`qcxr`: this project's Flax heads on its own statevector simulator (JAX, jit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qcxr.bench.frameworks import NUM_LAYERS, check_cell

VERSIONS = ("jax", "jaxlib", "flax", "optax", "numpy")


def build_step(
    head: str, num_labels: int, batch: int, backbone: str, seed: int = 0, **options: Any
) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(step, sync) of one training step of the CDL or DQC model."""
    check_cell(head, num_labels, batch, backbone)
    from qcxr.bench.frameworks.flax_step import build_flax_step
    from qcxr.models import ClassicalHead, DressedQuantumHead

    if head == "cdl":
        module = ClassicalHead(num_labels)
    else:
        module = DressedQuantumHead(num_labels, num_layers=NUM_LAYERS, backend="statevector")
    return build_flax_step(module, num_labels, batch, backbone == "resnet50", seed)


def device() -> str:
    from qcxr.bench.frameworks.flax_step import device_description

    return device_description()
