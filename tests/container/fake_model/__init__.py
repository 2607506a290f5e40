"""A tiny, real model for the contract tests (like the SageMaker training toolkit's `fake_ml_framework`).

It implements only what the interface requires (`fit`, `save`, `load`, `predict`, `METRIC_NAMES` from
model.json) plus one hyperparameter, so the contract's defaults for every optional hook are what the contract
tests exercise, and they keep passing whatever model the image ships.

Regression: least squares on the features (missing values as 0). Classification: least squares on each
class's indicator, turned into probabilities by clipping and normalising. Crude, deterministic, and good
enough that learnable data gives better metrics than noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sagemaker_contract.interface import Dataset, Hyperparameter

METRIC_NAMES = tuple(json.loads((Path(__file__).parent / "model.json").read_text())["metrics"])
HYPERPARAMETERS = {
    "ridge": Hyperparameter(float, 1e-3, lambda v: v >= 0, "a number of at least 0"),
}
MODEL_FILE = "fake-model.json"


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.nan_to_num(x.astype(np.float64)), np.ones(x.shape[0])])


def fit(train: Dataset, validation: Dataset | None, params: dict[str, Any], checkpoint_dir: Path) -> dict:
    a = _design(train.x)
    if train.task == "classification":
        targets = np.eye(train.num_classes)[train.y.astype(np.int64)]
    else:
        targets = train.y.astype(np.float64)[:, None]
    gram = a.T @ a + params["ridge"] * np.eye(a.shape[1])
    weights = np.linalg.solve(gram, a.T @ targets)
    return {"task": train.task, "weights": weights.tolist()}


def save(model: dict, directory: Path) -> None:
    (directory / MODEL_FILE).write_text(json.dumps(model))


def load(directory: Path) -> dict:
    model = json.loads((directory / MODEL_FILE).read_text())
    model["weights"] = np.asarray(model["weights"])
    return model


def predict(model: dict, features: np.ndarray) -> np.ndarray:
    scores = _design(features) @ np.asarray(model["weights"])
    if model["task"] == "regression":
        return scores[:, 0]
    p = np.clip(scores, 1e-3, None)
    p /= p.sum(axis=1, keepdims=True)
    return p[:, 1] if p.shape[1] == 2 else p
