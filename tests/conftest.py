"""Shared test fixtures: torchvision beside the CPU build of torch."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# The release paired with torch 2.13.0. The Makefile installs it with --no-deps into a folder of
# the venv that is not on sys.path (`pip install --target`): in site-packages, transformers would
# find it and import it without the shim below, and `from transformers import ResNetModel` would
# fail everywhere in the venv (qcxr bench table3, benchmarks/) with "torchvision::nms does not
# exist". It is a test reference only; qcxr itself never imports torchvision.
TORCHVISION_VERSION = "0.28.0"
TORCHVISION_TARGET = Path(sys.prefix) / "test-torchvision"


def import_torchvision():
    """torchvision, importable beside the CPU build of torch 2.13.0; None where it is not installed.

    An installed torchvision is used as it is; otherwise the one in TORCHVISION_TARGET (above).

    PyPI's torchvision 0.28.0 ships its C++ ops (nms, roi_align, ...; torchvision/_C.so) linked
    against the CUDA build of torch (libtorch_cuda.so, libc10_cuda.so), so beside the CPU build
    `torch.ops.load_library` fails. torchvision expects that: `extension._has_ops()` is then False
    and every registration of those ops checks it, except two. `_meta_registrations.py` registers
    fake kernels for nms and qnms with a bare `@torch.library.register_fake("torchvision::nms")`,
    which raises "operator torchvision::nms does not exist" and aborts `import torchvision`.

    The shim: while torchvision is imported, `torch.library.register_fake` skips torchvision ops
    that the dispatcher does not have (and only those), then is restored. Nothing else changes:
    the models are torchvision's own pure-Python code, and the C++ ops stay unavailable
    (`torchvision.ops.nms` raises torchvision's own "Couldn't load custom C++ ops"). Where the
    ops library does load (a matching CUDA pair), the shim passes every registration through.
    """
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if importlib.util.find_spec("torchvision") is None:
        if not (TORCHVISION_TARGET / "torchvision").is_dir():
            return None
        sys.path.append(str(TORCHVISION_TARGET))
    import torch
    import torch.library

    original = torch.library.register_fake

    def register_fake(op, func=None, /, **kwargs):
        namespace, _, name = op.partition("::") if isinstance(op, str) else ("", "", "")
        if namespace == "torchvision" and not hasattr(torch.ops.torchvision, name):
            return func if func is not None else (lambda fn: fn)
        return original(op, func, **kwargs)

    torch.library.register_fake = register_fake
    try:
        import torchvision
    finally:
        torch.library.register_fake = original
    return torchvision


@pytest.fixture(scope="session")
def torchvision():
    """The torchvision module; skipped where it is not installed, an error under CI."""
    pytest.importorskip("torch")
    module = import_torchvision()
    if module is None:
        message = f"torchvision is not installed (`make test` installs {TORCHVISION_VERSION})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the torchvision reference tests")
        pytest.skip(message)
    return module


@pytest.fixture
def tiny_features(monkeypatch):
    """`qcxr features` with a tiny stand-in backbone ("tiny@1"): for tests of what surrounds
    the extraction (stores, skips, tables) in a second; the ResNet50 path has its own tests."""
    import jax
    import jax.numpy as jnp

    from qcxr import features
    from qcxr.models import weights
    from test_features import TinyBackbone

    tiny = TinyBackbone()
    variables = tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    monkeypatch.setattr(features, "_backbone", lambda dtype: tiny)
    monkeypatch.setattr(weights, "resolve_resnet50_weights", lambda w: (variables, "tiny@1"))
