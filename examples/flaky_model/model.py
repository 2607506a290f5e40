"""Least squares in numpy that can be told to misbehave when serving, to exercise the deploy guardrail.

With its defaults it is an ordinary linear model (least squares, or softmax regression for classes). Trained with `fail_below=X`, its
`predict` raises on any request holding a row whose first feature is below X (the server answers 5xx, as a
model bug would); with `sleep_ms=N` each prediction call first sleeps N ms (a model too slow for the latency
budget). Both settings are saved with the model and act only once it is loaded for serving (training still
evaluates it normally), so the packaged artifact is the bad one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset, Hyperparameter

MODEL_FILE = "flaky-model.json"
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "fail_below": Hyperparameter(float, -math.inf, lambda v: not math.isnan(v), "a number"),
    "sleep_ms": Hyperparameter(int, 0, lambda v: 0 <= v <= 60_000, "an integer from 0 to 60000"),
}


@dataclass
class FlakyModel:
    task: str
    weights: list[list[float]]  # per feature then the intercept: one value (regression) or one per class
    fail_below: float
    sleep_ms: int
    # Only a loaded (served) model misbehaves: training evaluates the model it fitted, which must succeed.
    serving: bool = False


def _design(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(x.astype(np.float64))
    return np.hstack([x, np.ones((x.shape[0], 1))])


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _softmax_regression(design: np.ndarray, y: np.ndarray, classes: int, steps: int = 500) -> np.ndarray:
    """Multinomial logistic regression by gradient descent, on features scaled to unit spread."""
    scale = np.maximum(np.abs(design).max(axis=0), 1e-12)
    a = design / scale
    onehot = np.eye(classes)[y]
    weights = np.zeros((a.shape[1], classes))
    for _ in range(steps):
        weights -= 0.5 * a.T @ (_softmax(a @ weights) - onehot) / len(a)
    return weights / scale[:, None]


def fit(
    train: Dataset, validation: Dataset | None, params: dict[str, Any], checkpoint_dir: Path
) -> FlakyModel:
    design = _design(train.x)
    if train.task == "classification":
        weights = _softmax_regression(design, train.y.astype(np.int64), train.num_classes)
    else:
        weights, *_ = np.linalg.lstsq(design, train.y.astype(np.float64)[:, None], rcond=None)
    if not np.all(np.isfinite(weights)):
        raise UserError("the flaky example model's least squares did not converge")
    return FlakyModel(train.task, weights.tolist(), float(params["fail_below"]), int(params["sleep_ms"]))


def save(model: FlakyModel, directory: Path) -> None:
    fail_below = None if math.isinf(model.fail_below) else model.fail_below
    body = {
        "task": model.task,
        "weights": model.weights,
        "fail_below": fail_below,
        "sleep_ms": model.sleep_ms,
    }
    (directory / MODEL_FILE).write_text(json.dumps(body))


def load(directory: Path) -> FlakyModel:
    body = json.loads((directory / MODEL_FILE).read_text())
    fail_below = -math.inf if body["fail_below"] is None else float(body["fail_below"])
    return FlakyModel(body["task"], body["weights"], fail_below, int(body["sleep_ms"]), serving=True)


def predict(model: FlakyModel, features: np.ndarray) -> np.ndarray:
    if model.serving and model.sleep_ms:
        time.sleep(model.sleep_ms / 1000)
    design = _design(features)
    if model.serving and design.size and bool(np.any(design[:, 0] < model.fail_below)):
        raise RuntimeError(f"flaky model: a row's first feature is below {model.fail_below} (on purpose)")
    scores = design @ np.asarray(model.weights)
    if model.task == "regression":
        return scores[:, 0]
    probabilities = _softmax(scores)
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities
