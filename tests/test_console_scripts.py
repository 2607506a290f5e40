"""The console scripts `make setup` installs into the venv exist and answer --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", ["mlpipe-local-run", "mlpipe-runs", "mlpipe-emulator"])
def test_console_script_answers_help(script: str) -> None:
    result = subprocess.run([str(VENV_BIN / script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"usage: {script}" in result.stdout


def test_every_lambda_package_is_installed_with_the_tools() -> None:
    """The tools import the handlers' packages (the local run runs them): a Lambda folder missing from
    pyproject's package list imports in a checkout's tests (pytest's pythonpath) but not from the installed
    console scripts, which is how a fresh clone's `make local-run` failed."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    found = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = sorted(p.parent.name for p in (root / "lambdas").glob("*/__init__.py"))
    assert packages, "no Lambda packages found"
    missing = [p for p in packages if not any(fnmatch.fnmatch(p, pattern) for pattern in found["include"])]
    assert missing == [], f"add to pyproject.toml [tool.setuptools.packages.find] include: {missing}"
