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
