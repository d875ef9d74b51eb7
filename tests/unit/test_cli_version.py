"""``sidecar --version``: the installed distribution's version."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from sidecar import __version__
from sidecar.cli import app, package_version


def test_version_is_the_declared_one() -> None:
    declared = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert package_version() == declared["project"]["version"] == __version__
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"sidecar {declared['project']['version']}\n"

