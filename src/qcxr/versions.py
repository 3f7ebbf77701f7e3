"""Which versions of Python and of the libraries a result was made with.

Standard library only: the benchmark workers import it under other frameworks' interpreters.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

# What a training run records (versions.json).
RUN_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "dm-pix",
    "pennylane",
)
# What a report records: the run's libraries and those that computed the statistics and figures.
REPORT_PACKAGES = ("qcxr", *RUN_PACKAGES, "scipy", "pandas", "matplotlib")
# Distributions that ship under more than one name.
ALTERNATIVE_NAMES = {"tensorflow": ("tensorflow", "tensorflow-cpu")}


def package_version(name: str) -> str | None:
    """The installed version of a distribution (or of one of its alternative names), or None."""
    for dist in ALTERNATIVE_NAMES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def package_versions(names: Iterable[str] = RUN_PACKAGES) -> dict[str, str | None]:
    """{"python": version, name: version or None for each distribution}."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    found.update({name: package_version(name) for name in names})
    return found
