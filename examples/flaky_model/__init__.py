"""A deliberately bad model for the deploy guardrail (see model.py): build an image with it as with any
example (`--build-context model=examples/flaky_model`), train it with `fail_below` or `sleep_ms`, and its
packaged model fails or stalls when served."""

from __future__ import annotations

import json
from pathlib import Path

from .model import HYPERPARAMETERS, FlakyModel, fit, load, predict, save

METRIC_NAMES: tuple[str, ...] = tuple(
    json.loads((Path(__file__).parent / "model.json").read_text())["metrics"]
)

__all__ = ["HYPERPARAMETERS", "METRIC_NAMES", "FlakyModel", "fit", "load", "predict", "save"]
