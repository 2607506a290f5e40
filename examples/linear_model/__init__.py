"""An example model for the contract: ridge regression, or multinomial logistic regression, in numpy only.

It is a complete model package: nothing outside this folder changes to use it. Build an image with it:

    podman build --build-context model=examples/linear_model -t linear-model container/
    docker buildx build --build-context model=examples/linear_model -t linear-model container/

The image installs this folder as the package `user_model` (the contract's default module name), with the
pip requirements in requirements.txt. It implements the required interface (`fit`, `save`, `load`,
`predict`, `METRIC_NAMES` from model.json) and two optional hooks (`HYPERPARAMETERS`, `estimate_memory`);
the contract's defaults do the rest (evaluate: the standard metrics of the task).
"""

from __future__ import annotations

import json
from pathlib import Path

from .model import HYPERPARAMETERS, LinearModel, estimate_memory, fit, load, predict, save

METRIC_NAMES: tuple[str, ...] = tuple(
    json.loads((Path(__file__).parent / "model.json").read_text())["metrics"]
)

__all__ = [
    "HYPERPARAMETERS",
    "METRIC_NAMES",
    "LinearModel",
    "estimate_memory",
    "fit",
    "load",
    "predict",
    "save",
]
