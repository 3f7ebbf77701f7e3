"""The bundled config files: found by name from any installed qcxr, and by path from a clone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from qcxr import configs

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_names_and_files():
    assert {"paper", "demo", "labels45", "cxr-lt"} <= set(configs.names())
    for name in configs.names():
        found = configs.path(name)
        assert found == configs.path(f"{name}.yaml")
        assert found.parent == Path(configs.__file__).parent
        assert isinstance(yaml.safe_load(found.read_text()), dict)


def test_an_existing_file_is_returned_as_given(tmp_path):
    mine = tmp_path / "paper.yaml"
    mine.write_text("experiment: mine\n")
    assert configs.path(mine) == mine
    assert configs.path(str(mine)) == mine


def test_unknown_names_list_the_bundled_ones(tmp_path):
    for wrong in ("nope", "nope.yaml", tmp_path / "paper.yaml", "paper.yml"):
        with pytest.raises(FileNotFoundError, match="bundled: cxr-lt, demo, labels45, paper"):
            configs.path(wrong)


def test_the_clone_path_links_to_the_package():
    """configs/ at the top of a clone is a relative link to the packaged directory."""
    link = ROOT / "configs"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert (link / "paper.yaml").resolve() == configs.path("paper").resolve()


def test_configs_are_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["qcxr"]
    package = Path(configs.__file__).parent
    shipped = {p for pattern in patterns for p in package.parent.glob(pattern)}
    assert {package / f"{name}.yaml" for name in configs.names()} <= shipped
