"""The default model: XGBoost `hist` gradient boosting for tabular regression and classification.

It implements the interface the contract defines in `sagemaker_contract/interface.py` (`ModelModule` and
`OptionalHooks`); the contract loads it by name (`MLPIPE_MODEL_MODULE`, default `user_model`).

- `model.py`: parameters, objectives, training, prediction, metrics;
- `checkpoints.py`: checkpoints for managed spot training;
- `distributed.py`: XGBoost's collective across the job's hosts (the tracker on the leader);
- `fast_predict.py`: the low-latency predict used by serving;
- `model.json`: the static facts tools read without importing this package (the metric names).
"""

from __future__ import annotations

import json
from pathlib import Path

from .model import (
    HYPERPARAMETERS,
    Model,
    describe,
    estimate_memory,
    evaluate,
    fit,
    fit_distributed,
    infer_task,
    load,
    predict,
    save,
)

MANIFEST = json.loads((Path(__file__).parent / "model.json").read_text())
METRIC_NAMES: tuple[str, ...] = tuple(MANIFEST["metrics"])

__all__ = [
    "HYPERPARAMETERS",
    "METRIC_NAMES",
    "Model",
    "describe",
    "estimate_memory",
    "evaluate",
    "fit",
    "fit_distributed",
    "infer_task",
    "load",
    "predict",
    "save",
]
