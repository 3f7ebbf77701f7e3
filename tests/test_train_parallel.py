"""Data parallelism: the same training on a 1-device and a 2-device mesh gives the same losses.

The device count is fixed when jax starts, so the check runs in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_train_support import TESTS, small_study


def run_two_devices(spec: dict) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(TESTS),
    }
    proc = subprocess.run(
        [sys.executable, str(TESTS / "test_train_support.py"), "two-devices", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def assert_same_losses(one: list, two: list) -> None:
    a, b = np.asarray(one, float), np.asarray(two, float)
    assert a.shape == b.shape and len(a) > 0
    # Columns epoch, step, train_loss, val_loss: equal up to float reduction order.
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, equal_nan=True)


def test_two_devices_frozen_match_one_device(tmp_path):
    losses = run_two_devices({"out": str(tmp_path)})
    for one, two in zip(losses["frozen-1"], losses["frozen-2"], strict=True):
        assert_same_losses(one, two)


@pytest.mark.slow
def test_two_devices_finetune_match_one_device(tmp_path):
    study = small_study(tmp_path / "study")
    losses = run_two_devices(
        {"out": str(tmp_path / "runs"), "study": str(study), "cache": str(tmp_path / "cache")}
    )
    assert_same_losses(losses["finetune-1"][0], losses["finetune-2"][0])
