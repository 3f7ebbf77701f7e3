"""What a run was made with: versions.json (libraries, device, label files, backbone weights)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import jax

from qcxr import rundir
from qcxr.versions import RUN_PACKAGES, package_versions


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def write_versions(
    run_dir: str | Path,
    *,
    label_checksums: dict[str, str],
    weights: str,
    resumed: bool,
    resolved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write (or, on resume, extend) versions.json; every session of a run is listed.

    `resolved` maps config keys whose value is a choice made at run time ("auto") to what it
    became in this session, e.g. {"model.backend": "mps", "data.source": "mimic"}; config.yaml
    keeps the setting as written.
    """
    path = Path(run_dir) / rundir.VERSIONS
    session = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed": resumed,
        "python": platform.python_version(),
        "packages": {k: v for k, v in package_versions(RUN_PACKAGES).items() if k != "python"},
        "device": device_info(),
        "resolved": dict(resolved or {}),
    }
    info: dict[str, Any] = {}
    if resumed and path.is_file():
        info = json.loads(path.read_text())
    info.update(
        {
            "python": session["python"],
            "packages": session["packages"],
            "device": session["device"],
            "label_files_sha256": label_checksums,
            "weights": weights,
            "resolved": session["resolved"],
        }
    )
    info["sessions"] = [*info.get("sessions", []), session]
    path.write_text(json.dumps(info, indent=2) + "\n")
    return info
