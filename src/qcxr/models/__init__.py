"""Models: the ResNet50 backbone and the two classification heads (CDL, DQC)."""

from qcxr.models.heads import ClassicalHead, DressedQuantumHead, make_head
from qcxr.models.resnet import init_resnet50_variables, resnet50, resnet50_param_count
from qcxr.models.weights import load_resnet50_weights

__all__ = [
    "ClassicalHead",
    "DressedQuantumHead",
    "init_resnet50_variables",
    "load_resnet50_weights",
    "make_head",
    "resnet50",
    "resnet50_param_count",
]
