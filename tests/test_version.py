"""The version is written once, in Cargo.toml; the package reports the same one."""

from pathlib import Path

import pytest

import halffull

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_cargo_version() -> None:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert halffull.__version__ == cargo["package"]["version"]


def test_pyproject_takes_the_version_from_cargo() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]


def test_installed_metadata_agrees_with_the_extension() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("halffull")
    except PackageNotFoundError:
        pytest.skip("halffull is imported from the source tree, not installed")
    assert installed == halffull.__version__
