"""One module per framework of the Table III benchmark.

Each module exposes `build_step(head, num_labels, batch, backbone, seed=0, **options)` that builds
a functionally equivalent model (same ResNet50 architecture with random weights, same head, mean
BCE, Adam 1e-4) on a resident zero batch and returns `(step, sync)`: `step()` runs one training
step and returns the loss, `sync(loss)` blocks until that step has finished on the device.

These modules run inside `worker.py`, possibly under another interpreter (a framework's own
environment), so nothing here imports a framework at module level; `qcxr.config` imports only
the standard library.
"""

from __future__ import annotations

from qcxr.config import HEADS, ModelConfig, TrainConfig

# Framework name -> (module, distributions it needs). Order is the column order of Table III.
FRAMEWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pennylane-tf": ("pennylane_tf", ("tensorflow", "pennylane")),
    "pennylane-torch": ("pennylane_torch", ("torch", "transformers", "pennylane")),
    "pennylane-jax": ("pennylane_jax", ("jax", "flax", "optax", "pennylane")),
    "qcxr": ("qcxr_jax", ("jax", "flax", "optax")),
}

__all__ = ["BACKBONES", "FRAMEWORKS", "HEADS", "check_cell"]

BACKBONES = ("resnet50", "none")  # none: the head alone, on zero (B, FEATURES) features
FEATURES = 2048  # ResNet50 pooled width: the head's input with --backbone none
IMAGE_SHAPE = (224, 224, 3)  # Sec. III-F crop, NHWC (torch gets the NCHW transpose)
LEARNING_RATE = TrainConfig().learning_rate  # Sec. III-F: Adam 1e-4
NUM_LAYERS = ModelConfig().num_layers  # Sec. III-C.2: 3 variational layers


def check_cell(head: str, num_labels: int, batch: int, backbone: str) -> None:
    """Raise ValueError naming the bad field of one benchmark cell."""
    if head not in HEADS:
        raise ValueError(f"head {head!r}: expected one of {HEADS}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone {backbone!r}: expected one of {BACKBONES}")
    if num_labels < 1:
        raise ValueError(f"num_labels {num_labels}: expected >= 1")
    if batch < 1:
        raise ValueError(f"batch {batch}: expected >= 1")
