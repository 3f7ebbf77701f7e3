"""The bundled config files (paper.yaml, demo.yaml, ...), shipped as package data.

`configs/` at the top of a clone links here, so `configs/paper.yaml` works from a clone and
`path("paper")` from any installed `qcxr`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIX = ".yaml"


def _directory() -> Path:
    return Path(str(resources.files(__name__)))


def names() -> list[str]:
    """The bundled configs' names ("paper", "demo", ...), sorted."""
    return sorted(p.stem for p in _directory().glob(f"*{SUFFIX}"))


def path(name_or_path: str | Path) -> Path:
    """An existing file as given; else the bundled config of that name ("paper", "paper.yaml").

    Anything else is a FileNotFoundError that lists the bundled names.
    """
    given = Path(name_or_path)
    if given.is_file():
        return given
    if given.parent == Path(".") and given.suffix in ("", SUFFIX):
        bundled = _directory() / f"{given.stem}{SUFFIX}"
        if bundled.is_file():
            return bundled
    raise FileNotFoundError(
        f"{name_or_path}: no such config file, nor a bundled config of that name "
        f"(bundled: {', '.join(names())})"
    )
