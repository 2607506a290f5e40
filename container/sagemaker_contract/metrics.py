"""The standard metrics, in plain numpy (no scikit-learn in the image: it would add ~40 MB).

The default `evaluate` of a model that has none, and a library for models that have one: regression
`rmse`, `mae`, `r2`; classification `logloss`, `accuracy`, `auc` (macro one-vs-rest for more than two classes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sagemaker_contract.interface import Dataset

REGRESSION = ("rmse", "mae", "r2")
CLASSIFICATION = ("logloss", "accuracy", "auc")

EPS = 1e-15


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = y.astype(np.float64)
    err = pred.astype(np.float64) - y
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
    }


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney U) formula, with average ranks for ties."""
    positives = y == 1
    n_pos = int(positives.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(score.size, dtype=np.float64)
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [score.size]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """`y` holds class indices 0..n-1; `proba` is P(class 1) (binary) or (rows, n_classes)."""
    y = y.astype(np.int64)
    if n_classes == 2:
        p = np.clip(proba.astype(np.float64).reshape(-1), EPS, 1 - EPS)
        logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        accuracy = np.mean((p >= 0.5).astype(np.int64) == y)
        auc = binary_auc(y, p)
    else:
        p = np.clip(proba.astype(np.float64).reshape(y.size, n_classes), EPS, 1.0)
        logloss = -np.mean(np.log(p[np.arange(y.size), y]))
        accuracy = np.mean(np.argmax(p, axis=1) == y)
        # Macro one-vs-rest AUC over the classes present.
        aucs = [binary_auc((y == k).astype(np.int64), p[:, k]) for k in range(n_classes)]
        aucs = [a for a in aucs if not np.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
    return {"logloss": float(logloss), "accuracy": float(accuracy), "auc": float(auc)}


def class_probabilities(predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """A classifier's predictions as (rows, classes) probabilities; two classes may come as P(class 1)."""
    p = np.asarray(predictions, dtype=np.float64)
    if n_classes == 2 and (p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1)):
        p1 = p.reshape(-1)
        return np.column_stack([1.0 - p1, p1])
    return p.reshape(-1, n_classes)


def standard_metrics(dataset: Dataset, predictions: np.ndarray) -> dict[str, float]:
    """The task's standard metrics of `predictions` (what `predict` returns) against the dataset's target."""
    if dataset.task == "classification":
        n = dataset.num_classes
        proba = class_probabilities(predictions, n)
        return classification_metrics(dataset.y, proba[:, 1] if n == 2 else proba, n)
    return regression_metrics(dataset.y, np.asarray(predictions).reshape(-1))
