"""`pennylane-torch`: PyTorch model (transformers ResNet50 with random weights, NCHW) whose DQC
runs the PennyLane QNode with the torch interface. Eager, as in the paper: PennyLane circuits
could not be compiled with torch (Sec. III-E)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qcxr.bench.frameworks import (
    FEATURES,
    IMAGE_SHAPE,
    LEARNING_RATE,
    NUM_LAYERS,
    check_cell,
)

VERSIONS = ("pennylane", "torch", "transformers", "numpy")


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _lecun_linear(inputs: int, outputs: int):
    """nn.Linear with LeCun-normal weights and zero bias, as the Flax heads."""
    import torch

    layer = torch.nn.Linear(inputs, outputs)
    std = 1.0 / math.sqrt(inputs) / 0.87962566103423978  # flax's truncated-normal correction
    torch.nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    torch.nn.init.zeros_(layer.bias)
    return layer


def _model(head: str, num_labels: int, backbone: bool):
    import torch

    from qcxr.bench.frameworks.circuit import dqc_qnode

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if backbone:
                from transformers import ResNetConfig, ResNetModel

                self.backbone = ResNetModel(ResNetConfig())  # the microsoft/resnet-50 architecture
            self.pre = _lecun_linear(FEATURES, num_labels)
            if head == "dqc":
                self.circuit = dqc_qnode(num_labels, interface="torch")
                angles = torch.rand(NUM_LAYERS, num_labels) * (2 * math.pi)
                self.weights = torch.nn.Parameter(angles)
                self.post = _lecun_linear(num_labels, num_labels)

        def forward(self, x):
            if backbone:
                x = self.backbone(pixel_values=x).pooler_output.flatten(1)
            x = self.pre(x)
            if head == "cdl":
                return x
            z = torch.stack(self.circuit(torch.tanh(x) * (math.pi / 2), self.weights), dim=-1)
            return self.post(z.to(x.dtype))

    return Net()


def build_step(
    head: str, num_labels: int, batch: int, backbone: str, seed: int = 0, **options: Any
) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(step, sync) of one training step of the CDL or DQC model."""
    check_cell(head, num_labels, batch, backbone)
    import torch

    torch.manual_seed(seed)
    device = _device()
    with_backbone = backbone == "resnet50"
    model = _model(head, num_labels, with_backbone).to(device).train()
    height, width, channels = IMAGE_SHAPE
    shape = (batch, channels, height, width) if with_backbone else (batch, FEATURES)
    inputs = torch.zeros(shape, device=device)
    labels = torch.zeros((batch, num_labels), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    criterion = torch.nn.BCEWithLogitsLoss()  # mean over batch and labels

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss

    def sync(loss) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        loss.item()

    return step, sync


def device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"torch cuda: {torch.cuda.get_device_name(0)}"
    return f"torch cpu ({torch.get_num_threads()} threads)"
