"""Hyperparameters: SageMaker passes every value as a string. Parse, validate, fill defaults.

Contract-level names (`target`, `problem_type`) are here; the model's own, with their defaults, come from the
model module's `HYPERPARAMETERS` (see interface.py).
Unknown names are refused (typos would otherwise be silently ignored), except SageMaker/SDK-internal ones
(`sagemaker_*`, `_*`).
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Hyperparameter

CONTRACT_HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "target": Hyperparameter(str, None, lambda v: bool(v.strip()), "a column name"),
    "problem_type": Hyperparameter(
        str,
        "auto",
        lambda v: v in ("auto", "regression", "classification"),
        "one of auto, regression, classification",
    ),
}
MAX_VALUE_CHARS = 2500  # SageMaker's own limit per value


def _parse(name: str, raw: Any, kind: type) -> Any:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    text = text.strip()
    if kind is str:
        return text
    if kind is int:
        try:
            value = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise UserError(
                f"Hyperparameter {name} must be a whole number, but it is '{text[:80]}'."
            ) from None
        if isinstance(value, float):
            if not value.is_integer():
                raise UserError(f"Hyperparameter {name} must be a whole number, but it is '{text[:80]}'.")
            value = int(value)
        return value
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"Hyperparameter {name} must be a number, but it is '{text[:80]}'.") from None
        if not math.isfinite(value):
            raise UserError(f"Hyperparameter {name} must be a finite number, but it is '{text[:80]}'.")
        return value
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserError(f"Hyperparameter {name} must be true or false, but it is '{text[:80]}'.")
    raise TypeError(kind)


def parse(raw: dict[str, Any], model_specs: dict[str, Hyperparameter]) -> dict[str, Any]:
    """Validated hyperparameters with defaults. Raises UserError with one clear sentence per problem."""
    specs = {**CONTRACT_HYPERPARAMETERS, **model_specs}
    if not isinstance(raw, dict):
        raise UserError("hyperparameters.json must hold a JSON object of name → string value.")
    values: dict[str, Any] = {name: spec[1] for name, spec in specs.items()}
    problems: list[str] = []
    for name, raw_value in raw.items():
        if name.startswith(("sagemaker_", "_")):
            continue
        spec = specs.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f" Did you mean {close[0]}?" if close else f" Known: {', '.join(sorted(specs))}."
            problems.append(f"Unknown hyperparameter {name}.{hint}")
            continue
        kind, _default, check, rule = spec
        if isinstance(raw_value, str) and len(raw_value) > MAX_VALUE_CHARS:
            problems.append(f"Hyperparameter {name} is longer than {MAX_VALUE_CHARS} characters.")
            continue
        try:
            value = _parse(name, raw_value, kind)
        except UserError as error:
            problems.append(f"{error} It must be {rule}.")
            continue
        if not check(value):
            problems.append(f"Hyperparameter {name} is {value}, but it must be {rule}.")
            continue
        values[name] = value
    if problems:
        raise UserError("Invalid hyperparameters: " + " ".join(problems))
    return values


def read(path: Path) -> dict[str, Any]:
    """The raw hyperparameters.json (absent means all defaults)."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text() or "{}")
    except ValueError as error:
        raise UserError(f"hyperparameters.json is not valid JSON ({error}).") from None
