"""Where the project's files are: the tools work on the checkout they are installed from (editable)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_DIR = ROOT / "container"
SAMPLE_DATA = ROOT / "data" / "sample"
SETUP_CONTAINER_TOOL = ROOT / "scripts" / "setup-container-tool.sh"
