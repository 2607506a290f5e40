"""Regression or classification, and the class labels: decided once, by the contract, for every model.

Precedence: the `problem_type` hyperparameter, then the model's `infer_task(params)` hook (e.g. from an
objective hyperparameter), then the target itself: text or true/false labels, two values, or class codes 0..k-1
(k <= 20) mean classification; any other number means regression. The decision and its reason are logged
and recorded in model-meta.json, because a wrong guess trains without an error (codes 10/20/30 are numbers
to this rule; set problem_type=classification).

For classification the model sees class codes 0..k-1 in `Dataset.y` and the labels in `Dataset.classes`
(text, numbers or booleans, sorted), so every model gets the same encoding and serving can answer with labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sagemaker_contract.errors import UserError

MAX_INFERRED_CLASSES = 20
MAX_CLASSES = 10_000
UNSEEN = -1.0  # the reader's code for a text label that the train channel does not have


@dataclass(frozen=True)
class Target:
    """What the reader knows about a target column: its kind and, for text, its labels (code order)."""

    kind: str  # numeric | bool | categorical
    categories: list[str] | None = None
    unseen: tuple[str, ...] = ()  # examples of labels missing from the train channel's (other channels)


@dataclass(frozen=True)
class Task:
    task: str  # regression | classification
    source: str  # problem_type | model | target
    reason: str
    classes: list[Any] | None

    def describe(self, target_name: str) -> str:
        how = {
            "problem_type": "set by problem_type",
            "model": "from the model's settings",
            "target": "inferred",
        }[self.source]
        text = f"task: {self.task} ({how}: {self.reason})"
        if self.classes is not None:
            shown = ", ".join(str(c) for c in self.classes[:20])
            more = f", ... ({len(self.classes)} in all)" if len(self.classes) > 20 else ""
            text += f"; {len(self.classes)} classes: {shown}{more}"
        if self.source == "target":
            other = "regression" if self.task == "classification" else "classification"
            text += f". Set problem_type={other} if '{target_name}' is meant otherwise."
        return text


def _label(value: float) -> Any:
    """A numeric class label as the data wrote it: 10 rather than 10.0, 0.1 rather than 0.10000000149."""
    number = float(str(np.float32(value)))  # the shortest text that reads back as the same float32
    return int(number) if number.is_integer() else number


def _values_text(values: np.ndarray) -> str:
    shown = ", ".join(str(_label(v)) for v in values[:5])
    return shown + (", ..." if values.size > 5 else "")


def decide(
    y: np.ndarray, target: Target, target_name: str, problem_type: str, model_hint: str | None
) -> Task:
    """The task and, for classification, the sorted class labels of the train channel's target."""
    if target.kind == "categorical":
        assert target.categories is not None
        if problem_type == "regression" or (problem_type == "auto" and model_hint == "regression"):
            example = target.categories[0] if target.categories else ""
            raise UserError(
                f"The target column '{target_name}' holds text (e.g. '{example[:40]}'), which cannot be "
                "predicted by regression. Leave problem_type unset (or classification) to train a classifier, "
                "or choose a numeric target column."
            )
        source = "problem_type" if problem_type == "classification" else "target"
        return _classes(
            Task("classification", source, "the target holds text labels", list(target.categories))
        )
    values = np.unique(y)
    if problem_type != "auto":
        task, source, reason = problem_type, "problem_type", f"problem_type={problem_type}"
    elif model_hint is not None:
        task, source, reason = model_hint, "model", "the model's settings (e.g. its objective)"
    elif target.kind == "bool":
        task, source, reason = "classification", "target", "the target holds true/false values"
    elif values.size == 2:
        task, source, reason = (
            "classification",
            "target",
            f"the target has two values ({_values_text(values)})",
        )
    elif (
        2 < values.size <= MAX_INFERRED_CLASSES
        and values[0] == 0
        and np.array_equal(values, np.arange(values.size, dtype=values.dtype))
    ):
        task, source, reason = (
            "classification",
            "target",
            f"the target holds class codes 0..{values.size - 1}",
        )
    else:
        task, source = "regression", "target"
        if values.size <= MAX_INFERRED_CLASSES and np.all(values == np.round(values)):
            reason = (
                f"the target has {values.size} distinct whole numbers ({_values_text(values)}), "
                "not class codes 0..k-1"
            )
        else:
            reason = f"the target has {values.size:,} distinct values"
    if task == "regression":
        return Task("regression", source, reason, None)
    if target.kind == "bool":
        labels: list[Any] = [bool(v) for v in values]
    else:
        labels = [_label(v) for v in values]
    return _classes(Task("classification", source, reason, labels))


def _classes(task: Task) -> Task:
    assert task.classes is not None
    if len(task.classes) < 2:
        only = task.classes[0] if task.classes else "none"
        raise UserError(
            f"The target has a single value ({only}) in the training data: classification needs at least two "
            "classes. Check the target column, or set problem_type=regression."
        )
    if len(task.classes) > MAX_CLASSES:
        raise UserError(
            f"The target has {len(task.classes):,} distinct values: too many classes for classification "
            f"(at most {MAX_CLASSES:,}). Set problem_type=regression if it is a number to predict."
        )
    return task


def encode(y: np.ndarray, target: Target, task: Task, what: str) -> np.ndarray:
    """Class codes 0..k-1 of a channel's target (float32), or the values for regression.

    Raises UserError when a channel other than train has labels that train does not have.
    """
    if task.task == "regression":
        return y
    assert task.classes is not None
    if target.kind == "categorical":
        unknown = y == UNSEEN
        if np.any(unknown):
            examples = ", ".join(f"'{v}'" for v in target.unseen[:5])
            raise UserError(
                f"The {what} has {int(unknown.sum())} target value(s) that never occur in the training data "
                f"({examples}). Every class must appear in the training channel."
            )
        return y
    numeric = np.asarray([float(c) for c in task.classes], dtype=np.float32)
    index = np.clip(np.searchsorted(numeric, y), 0, len(numeric) - 1)
    unknown = numeric[index] != y
    if np.any(unknown):
        bad = sorted({_label(float(v)) for v in y[unknown][:50]})[:5]
        raise UserError(
            f"The {what} has target values {bad} that never occur in the training data "
            f"(classes there: {task.classes[:10]}). Every class must appear in the training channel."
        )
    return index.astype(np.float32)
