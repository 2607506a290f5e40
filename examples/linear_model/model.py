"""Ridge regression (closed form) and multinomial logistic regression (Nesterov gradient descent) in numpy.

Features are standardised with the training data's mean and spread, a missing value becomes the mean (0
after standardising), and each categorical feature (category codes from the contract) becomes one indicator
column per category; a missing or unseen category is all zeros. The intercept is not penalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset, Hyperparameter

MODEL_FILE = "linear-model.npz"
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "l2": Hyperparameter(float, 1.0, lambda v: v >= 0, "a number of at least 0"),
    "max_iter": Hyperparameter(int, 300, lambda v: 1 <= v <= 100_000, "an integer from 1 to 100000"),
}


@dataclass
class LinearModel:
    task: str
    numeric: np.ndarray  # column indices of the numeric features
    mean: np.ndarray  # per numeric feature
    scale: np.ndarray
    categorical: np.ndarray  # column indices of the categorical features
    category_counts: np.ndarray  # categories per categorical feature
    weights: np.ndarray  # (design columns, outputs); the last row is the intercept


def _design(model: LinearModel, x: np.ndarray) -> np.ndarray:
    numeric = x[:, model.numeric].astype(np.float64)
    numeric = np.where(np.isnan(numeric), model.mean, numeric)
    parts = [(numeric - model.mean) / model.scale]
    for column, count in zip(model.categorical, model.category_counts, strict=True):
        codes = x[:, column]
        known = ~np.isnan(codes) & (codes >= 0) & (codes < count)
        indicators = np.zeros((x.shape[0], int(count)))
        indicators[np.flatnonzero(known), codes[known].astype(np.int64)] = 1.0
        parts.append(indicators)
    parts.append(np.ones((x.shape[0], 1)))
    return np.hstack(parts)


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)


def _largest_singular_value_squared(a: np.ndarray, iterations: int = 30) -> float:
    """Power iteration on AᵀA: the step size for gradient descent, without a full SVD."""
    v = np.random.default_rng(0).normal(size=a.shape[1])
    value = 1.0
    for _ in range(iterations):
        w = a.T @ (a @ v)
        value = float(np.linalg.norm(w))
        if value == 0:
            return 1.0
        v = w / value
    return value


def _fit_logistic(a: np.ndarray, classes: np.ndarray, k: int, l2: float, max_iter: int) -> np.ndarray:
    """Minimise mean cross-entropy + l2/(2n) |W|² (intercept free) with Nesterov's accelerated gradient."""
    n = a.shape[0]
    targets = np.eye(k)[classes]
    penalty = np.ones((a.shape[1], 1))
    penalty[-1] = 0.0  # no penalty on the intercept
    lipschitz = 0.5 * _largest_singular_value_squared(a) / n + l2 / n
    step = 1.0 / lipschitz
    weights = np.zeros((a.shape[1], k))
    momentum = weights.copy()
    t = 1.0
    for _ in range(max_iter):
        gradient = a.T @ (_softmax(a @ momentum) - targets) / n + (l2 / n) * penalty * momentum
        updated = momentum - step * gradient
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        momentum = updated + ((t - 1) / t_next) * (updated - weights)
        weights, t = updated, t_next
    return weights


def fit(
    train: Dataset, validation: Dataset | None, params: dict[str, Any], checkpoint_dir: Path
) -> LinearModel:
    categorical = np.flatnonzero(train.categorical)
    numeric = np.flatnonzero(~np.asarray(train.categorical, dtype=bool))
    values = train.x[:, numeric].astype(np.float64)
    with np.errstate(all="ignore"):  # an all-missing column: mean 0, spread 1
        mean = np.nan_to_num(np.nanmean(values, axis=0)) if values.size else np.zeros(0)
        scale = np.nan_to_num(np.nanstd(values, axis=0)) if values.size else np.zeros(0)
    scale[scale == 0] = 1.0
    counts = np.array([len(train.categories[train.feature_names[j]]) for j in categorical], dtype=np.int64)
    model = LinearModel(train.task, numeric, mean, scale, categorical, counts, np.zeros((0, 0)))
    a = _design(model, train.x)
    if train.task == "classification":
        model.weights = _fit_logistic(
            a, train.y.astype(np.int64), train.num_classes, params["l2"], params["max_iter"]
        )
    else:
        penalty = params["l2"] * np.eye(a.shape[1])
        penalty[-1, -1] = 0.0
        try:
            model.weights = np.linalg.solve(a.T @ a + penalty, a.T @ train.y.astype(np.float64))[:, None]
        except np.linalg.LinAlgError:
            raise UserError(
                "The linear model's equations are singular (duplicate or constant columns with l2=0). "
                "Set the l2 hyperparameter above 0."
            ) from None
    return model


def estimate_memory(rows: int, features: int, params: dict[str, Any]) -> int:
    """The float64 design matrix, a working copy, and the (features x features) normal equations."""
    return 2 * rows * (features + 1) * 8 + (features + 1) ** 2 * 8


def save(model: LinearModel, directory: Path) -> None:
    with (directory / MODEL_FILE).open("wb") as handle:
        np.savez(
            handle,
            task=np.array(model.task),
            numeric=model.numeric,
            mean=model.mean,
            scale=model.scale,
            categorical=model.categorical,
            category_counts=model.category_counts,
            weights=model.weights,
        )


def load(directory: Path) -> LinearModel:
    with np.load(directory / MODEL_FILE, allow_pickle=False) as saved:
        return LinearModel(
            task=str(saved["task"]),
            numeric=saved["numeric"],
            mean=saved["mean"],
            scale=saved["scale"],
            categorical=saved["categorical"],
            category_counts=saved["category_counts"],
            weights=saved["weights"],
        )


def predict(model: LinearModel, features: np.ndarray) -> np.ndarray:
    """Regression: the value. Two classes: P(classes[1]). More: one probability per class."""
    scores = _design(model, features) @ model.weights
    if model.task == "regression":
        return scores[:, 0]
    probabilities = _softmax(scores)
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities
