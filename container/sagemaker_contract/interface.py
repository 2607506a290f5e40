"""The model interface: what the contract hands a model, and what it expects back.

The contract owns this interface and the model plugs in, as in the SageMaker inference toolkit: the contract
imports the module named by the `MLPIPE_MODEL_MODULE` environment variable (default `user_model`), checks it
once at start-up (one line naming what is missing), and fills optional hooks with defaults. Nothing here
imports a model or knows a model's files.

A model module provides (`ModelModule`):

    METRIC_NAMES: Sequence[str]          # every metric name `evaluate` may return; read from model.json
    fit(train, validation, params, checkpoint_dir) -> model
    save(model, directory) -> None       # everything `load` needs, in `directory`
    load(directory) -> model
    predict(model, features) -> np.ndarray   # row-wise: one prediction per row, from that row alone

and may provide (`OptionalHooks`; the default in brackets):

    HYPERPARAMETERS: Mapping[str, Hyperparameter]   [{}: only the contract's own, `target` and `problem_type`]
    evaluate(model, dataset) -> dict[str, float]    [the standard metrics of the task, see metrics.py]
    infer_task(params) -> "regression" | "classification" | None   [None: decided from the target]
    describe(model) -> dict[str, Any]               [{}: facts for the log and model-meta.json]
    estimate_memory(rows, features, params) -> int  [bytes beyond the contract's own matrix: one more copy]
    ModelError: type[Exception]                      [none; `sagemaker_contract.errors.UserError` always works]
    fit_distributed(train, validation, params, checkpoint_dir, cluster) -> model
                                                     [none: a job with several hosts fails with a sentence]

`fit_distributed` is called instead of `fit` when the job has more than one host. The contract has already
done the distributed setup: `train` is this host's share of the rows (encoded as on every other host),
`checkpoint_dir` is this host's own folder, and `cluster` (`sagemaker_contract.cluster.Cluster`) says which
host this is (`current_host`, `rank`, `world_size`, `hosts`, `leader`, `is_leader`, `leader_address`) and
lets hosts agree on small facts (`allgather`, `broadcast`, `barrier`). The model runs its own collective
(the default model: its library's tracker on the leader) and returns the same model on every host; only the leader's is evaluated
and saved.

Next to the module (for a package: in its folder) a `model.json` manifest declares the static facts that
tools must read without importing the model (the CDK stack derives its MetricDefinitions from it):
`{"name": "...", "metrics": ["rmse", ...]}`. `METRIC_NAMES` must equal its "metrics".
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from sagemaker_contract.errors import UserError

if TYPE_CHECKING:
    from sagemaker_contract.cluster import Cluster

MODEL_MODULE_ENV = "MLPIPE_MODEL_MODULE"
DEFAULT_MODEL_MODULE = "user_model"
MANIFEST_NAME = "model.json"
TASKS = ("regression", "classification")
CONTRACT_HYPERPARAMETER_NAMES = frozenset({"target", "problem_type"})  # see hyperparameters.py


class Hyperparameter(NamedTuple):
    """One hyperparameter a model accepts. SageMaker passes strings; the contract parses them to `kind`,
    checks them with `check` and explains failures with `rule` ("an integer from 1 to 32")."""

    kind: type
    default: Any
    check: Callable[[Any], bool]
    rule: str


@dataclass
class Dataset:
    """One channel's rows, as the contract hands them to the model.

    `x` is float32 (rows, features), C order; NaN is a missing value. A categorical feature (a text column
    in the data) holds category codes 0..k-1 into `categories[name]`, NaN for missing or unseen. For
    classification `y` holds class codes 0..k-1 into `classes`; for regression, the target's values.
    """

    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_name: str
    source: str = ""  # for messages, e.g. "'train' channel (2 files)"
    categories: dict[str, list[str]] = field(default_factory=dict)
    task: str = "regression"
    classes: list[Any] | None = None  # classification: the label of each class code (text, number or bool)

    @property
    def categorical(self) -> list[bool]:
        """Per feature: True when it holds category codes."""
        return [name in self.categories for name in self.feature_names]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0


class ModelModule(Protocol):
    """What a model module must define (module-level names; no `self` in the real functions)."""

    METRIC_NAMES: Sequence[str]

    def fit(
        self, train: Dataset, validation: Dataset | None, params: dict[str, Any], checkpoint_dir: Path
    ) -> Any: ...

    def save(self, model: Any, directory: Path) -> None: ...

    def load(self, directory: Path) -> Any: ...

    def predict(self, model: Any, features: np.ndarray) -> np.ndarray:
        """Regression: one value per row. Classification: P(classes[1]) per row for two classes (shape
        (rows,) or (rows, 2)), else (rows, classes) probabilities.

        Row-wise: a row's prediction depends on that row alone. The server predicts the rows of requests that
        arrive together in one call and splits the answer by rows (batching.py), as batch transform already
        splits and joins records as it likes."""
        ...


class OptionalHooks(Protocol):
    """What a model module may define; the contract falls back to the defaults in the module docstring."""

    HYPERPARAMETERS: Mapping[str, Hyperparameter]

    def evaluate(self, model: Any, dataset: Dataset) -> dict[str, float]: ...

    def infer_task(self, params: dict[str, Any]) -> str | None: ...

    def describe(self, model: Any) -> dict[str, Any]: ...

    def estimate_memory(self, rows: int, features: int, params: dict[str, Any]) -> int: ...

    def fit_distributed(
        self,
        train: Dataset,
        validation: Dataset | None,
        params: dict[str, Any],
        checkpoint_dir: Path,
        cluster: Cluster,
    ) -> Any: ...


# name -> number of positional parameters the contract passes.
REQUIRED_FUNCTIONS = {"fit": 4, "save": 2, "load": 1, "predict": 2}
OPTIONAL_FUNCTIONS = {
    "evaluate": 2,
    "infer_task": 1,
    "describe": 1,
    "estimate_memory": 3,
    "fit_distributed": 5,
}


def _accepts(function: Any, count: int) -> bool:
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): trust it
        return True
    return True


def manifest_path(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).parent / MANIFEST_NAME if file else None


def read_manifest(path: Path) -> dict[str, Any]:
    """The model.json manifest: {"name": str, "metrics": [str, ...]}. Raises ValueError with a sentence."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({error})") from None
    metrics = manifest.get("metrics") if isinstance(manifest, dict) else None
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ValueError(f'{path} needs "metrics": a non-empty list of metric names')
    return manifest


class ModelPlugin:
    """A checked model module with every optional hook filled in. The contract calls the model only here."""

    def __init__(self, module: ModuleType, name: str) -> None:
        self.module = module
        self.name = name
        problems: list[str] = []
        for function, count in {**REQUIRED_FUNCTIONS, **OPTIONAL_FUNCTIONS}.items():
            value = getattr(module, function, None)
            if value is None:
                if function in REQUIRED_FUNCTIONS:
                    problems.append(f"missing {function}()")
            elif not callable(value):
                problems.append(f"{function} is not a function")
            elif not _accepts(value, count):
                problems.append(f"{function}() does not take {count} arguments")
        metric_names = getattr(module, "METRIC_NAMES", None)
        if metric_names is None:
            problems.append("missing METRIC_NAMES")
        elif isinstance(metric_names, str) or not all(isinstance(m, str) for m in metric_names):
            problems.append("METRIC_NAMES is not a list of names")
        path = manifest_path(module)
        if path is None or not path.is_file():
            problems.append(f"no {MANIFEST_NAME} manifest next to it")
        else:
            try:
                manifest = read_manifest(path)
            except ValueError as error:
                problems.append(str(error))
            else:
                if metric_names is not None and list(metric_names) != manifest["metrics"]:
                    problems.append(f"METRIC_NAMES differs from the metrics in {MANIFEST_NAME}")
                self.manifest = manifest
        hyperparameters = getattr(module, "HYPERPARAMETERS", {})
        if not isinstance(hyperparameters, Mapping) or not all(
            isinstance(spec, tuple) and len(spec) == 4 for spec in hyperparameters.values()
        ):
            problems.append("HYPERPARAMETERS is not a mapping of name to (kind, default, check, rule)")
        elif CONTRACT_HYPERPARAMETER_NAMES & set(hyperparameters):
            clash = ", ".join(sorted(CONTRACT_HYPERPARAMETER_NAMES & set(hyperparameters)))
            problems.append(f"HYPERPARAMETERS redefines the contract's own {clash}")
        if problems:
            raise ModelInterfaceError(
                f"The model module '{name}' ({MODEL_MODULE_ENV}) does not implement the model interface: "
                f"{'; '.join(problems)}. See container/README.md, 'Bringing your own model'."
            )
        self.metric_names: tuple[str, ...] = tuple(metric_names)  # type: ignore[arg-type]
        self.hyperparameters: dict[str, Hyperparameter] = {
            key: Hyperparameter(*spec) for key, spec in hyperparameters.items()
        }
        error_type = getattr(module, "ModelError", None)
        self.errors: tuple[type[BaseException], ...] = (UserError,) + (
            (error_type,) if isinstance(error_type, type) and issubclass(error_type, Exception) else ()
        )

    # -- required ------------------------------------------------------------------------------------------
    def fit(
        self, train: Dataset, validation: Dataset | None, params: dict[str, Any], checkpoint_dir: Path
    ) -> Any:
        return self.module.fit(train, validation, params, checkpoint_dir)

    def save(self, model: Any, directory: Path) -> None:
        self.module.save(model, directory)

    def load(self, directory: Path) -> Any:
        return self.module.load(directory)

    def predict(self, model: Any, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.module.predict(model, features))

    # -- optional, with defaults ---------------------------------------------------------------------------
    @property
    def supports_distributed(self) -> bool:
        return callable(getattr(self.module, "fit_distributed", None))

    def fit_distributed(
        self,
        train: Dataset,
        validation: Dataset | None,
        params: dict[str, Any],
        checkpoint_dir: Path,
        cluster: Cluster,
    ) -> Any:
        return self.module.fit_distributed(train, validation, params, checkpoint_dir, cluster)

    def evaluate(self, model: Any, dataset: Dataset) -> dict[str, float]:
        """The model's metrics, checked against the names it declared (a typo would silently vanish from
        the MetricDefinitions otherwise)."""
        if hasattr(self.module, "evaluate"):
            metrics = self.module.evaluate(model, dataset)
        else:
            from sagemaker_contract.metrics import standard_metrics

            metrics = standard_metrics(dataset, self.predict(model, dataset.x))
            metrics = {k: v for k, v in metrics.items() if k in self.metric_names}
        if not isinstance(metrics, Mapping):
            raise ModelInterfaceError(
                f"The model's evaluate() returned {type(metrics).__name__}, not a dict."
            )
        undeclared = sorted(set(metrics) - set(self.metric_names))
        if undeclared:
            raise ModelInterfaceError(
                f"The model's evaluate() returned metric(s) {', '.join(undeclared)} that its {MANIFEST_NAME} "
                f"does not declare (declared: {', '.join(self.metric_names)}). Add them to {MANIFEST_NAME}."
            )
        return {name: float(value) for name, value in metrics.items()}

    def infer_task(self, params: dict[str, Any]) -> str | None:
        hook = getattr(self.module, "infer_task", None)
        task = hook(params) if hook else None
        if task is not None and task not in TASKS:
            raise ModelInterfaceError(
                f"The model's infer_task() returned {task!r}, not one of {', '.join(TASKS)}."
            )
        return task

    def describe(self, model: Any) -> dict[str, Any]:
        hook = getattr(self.module, "describe", None)
        return dict(hook(model)) if hook else {}

    def estimate_memory(self, rows: int, features: int, params: dict[str, Any]) -> int:
        hook = getattr(self.module, "estimate_memory", None)
        return int(hook(rows, features, params)) if hook else rows * features * 4


class ModelInterfaceError(UserError):
    """The model module breaks the interface: a developer's error, reported as one sentence like bad data."""


def module_name() -> str:
    return os.environ.get(MODEL_MODULE_ENV, "").strip() or DEFAULT_MODEL_MODULE


@functools.cache
def _load(name: str) -> ModelPlugin:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # any import failure: one line, the log has the rest
        raise ModelInterfaceError(
            f"The model module '{name}' ({MODEL_MODULE_ENV}) could not be imported: "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from error
    return ModelPlugin(module, name)


def load_model_plugin(name: str | None = None) -> ModelPlugin:
    """The model module named by MLPIPE_MODEL_MODULE (default user_model), checked once per process."""
    return _load(name or module_name())
