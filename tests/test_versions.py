"""qcxr.versions: the one package-version collector (runs, reports, benchmark workers)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata

from qcxr import versions


def test_versions_are_those_importlib_metadata_reports():
    found = versions.package_versions(["numpy", "pyyaml", "surely-not-installed-qcxr"])
    assert found == {
        "python": platform.python_version(),
        "numpy": metadata.version("numpy"),
        "pyyaml": metadata.version("pyyaml"),
        "surely-not-installed-qcxr": None,
    }
    assert set(versions.RUN_PACKAGES) <= set(versions.REPORT_PACKAGES)


def test_alternative_distribution_names_are_tried(monkeypatch):
    monkeypatch.setitem(versions.ALTERNATIVE_NAMES, "numpy-alias", ("not-there", "numpy"))
    assert versions.package_version("numpy-alias") == metadata.version("numpy")


def test_importing_it_pulls_in_nothing_beyond_the_standard_library():
    code = "import sys, qcxr.versions; print(sorted(m for m in ('yaml', 'numpy', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
