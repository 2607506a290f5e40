"""XGBoost `hist` training: parameters, objectives, the booster and its prediction.

Why XGBoost `hist` (not LightGBM): one small CPU-only wheel (`xgboost-cpu`), fast multi-threaded histogram
training on a float32 matrix through `QuantileDMatrix` (no second full-precision copy), native categorical
features, native checkpoint/resume (`xgb_model=`), and `inplace_predict` for low-latency serving.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sagemaker_contract.cluster import Cluster
from sagemaker_contract.errors import UserError
from sagemaker_contract.interface import Dataset, Hyperparameter
from sagemaker_contract.metrics import standard_metrics

from . import checkpoints, distributed
from .fast_predict import predict as booster_predict

MODEL_FILE = "xgboost-model.ubj"
META_FILE = "xgboost-meta.json"
SKETCH_SAMPLE_ROWS = 200_000

HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "num_round": Hyperparameter(int, 100, lambda v: 1 <= v <= 100_000, "an integer from 1 to 100000"),
    "max_depth": Hyperparameter(int, 6, lambda v: 1 <= v <= 32, "an integer from 1 to 32"),
    "eta": Hyperparameter(float, 0.3, lambda v: 0 < v <= 1, "a number greater than 0 and at most 1"),
    "objective": Hyperparameter(
        str, None, lambda v: bool(v), "an XGBoost objective such as reg:squarederror"
    ),
    "early_stopping_rounds": Hyperparameter(
        int, 10, lambda v: 0 <= v <= 10_000, "an integer from 0 (off) to 10000"
    ),
    "subsample": Hyperparameter(float, 1.0, lambda v: 0 < v <= 1, "a number greater than 0 and at most 1"),
    "colsample_bytree": Hyperparameter(
        float, 1.0, lambda v: 0 < v <= 1, "a number greater than 0 and at most 1"
    ),
    "min_child_weight": Hyperparameter(float, 1.0, lambda v: v >= 0, "a number of at least 0"),
    "lambda": Hyperparameter(float, 1.0, lambda v: v >= 0, "a number of at least 0"),
    "alpha": Hyperparameter(float, 0.0, lambda v: v >= 0, "a number of at least 0"),
    "gamma": Hyperparameter(float, 0.0, lambda v: v >= 0, "a number of at least 0"),
    "max_bin": Hyperparameter(int, 256, lambda v: 2 <= v <= 4096, "an integer from 2 to 4096"),
    "num_class": Hyperparameter(int, None, lambda v: 2 <= v <= 10_000, "an integer from 2 to 10000"),
    "scale_pos_weight": Hyperparameter(float, 1.0, lambda v: v > 0, "a number greater than 0"),
    "seed": Hyperparameter(int, 0, lambda v: 0 <= v < 2**31, "a non-negative integer"),
    "nthread": Hyperparameter(int, 0, lambda v: 0 <= v <= 1024, "an integer from 0 (all cores) to 1024"),
    "checkpoint_every": Hyperparameter(int, 10, lambda v: 1 <= v <= 100_000, "an integer of at least 1"),
}

# The objectives whose predictions the contract's metrics evaluate correctly: probabilities for
# classification, values on the target's scale for regression. Two train with the same loss as a
# probability objective and only differ in the output transform, so they train as that objective.
CLASSIFICATION = {"binary:logistic": None, "binary:logitraw": "binary:logistic",
                  "multi:softprob": None, "multi:softmax": "multi:softprob"}  # fmt: skip
REGRESSION = {
    "reg:squarederror": None,
    "reg:squaredlogerror": (-1.0, False, "above -1"),
    "reg:pseudohubererror": None,
    "reg:absoluteerror": None,
    "reg:logistic": (0.0, True, "from 0 to 1"),
    "reg:gamma": (0.0, False, "above 0"),
    "reg:tweedie": (0.0, True, "of at least 0"),
    "count:poisson": (0.0, True, "of at least 0"),
}  # objective -> (lower bound, bound allowed, words) for the target, or None


@dataclass
class Model:
    booster: xgb.Booster
    meta: dict[str, Any] = field(default_factory=dict)
    # Predictions already computed during fit, by id() of the feature matrix (never saved).
    cached_predictions: dict[int, np.ndarray] = field(default_factory=dict)


def infer_task(params: dict[str, Any]) -> str | None:
    """An explicit objective decides the task. The contract asks before reading any data, so an objective
    whose output cannot be evaluated is refused here, up front."""
    objective = params.get("objective")
    if not objective:
        return None
    if objective == "binary:hinge":
        raise UserError(
            "objective binary:hinge predicts 0 or 1 without a probability, so logloss and AUC cannot be "
            "evaluated. Use binary:logistic (the endpoint still answers labels: Accept application/json; "
            "output=labels)."
        )
    if objective in CLASSIFICATION:
        return "classification"
    if objective in REGRESSION:
        return "regression"
    raise UserError(
        f"objective {objective} is not supported: its predictions are not what the metrics evaluate. Use one of "
        f"{', '.join([*CLASSIFICATION, *REGRESSION])}, or leave it unset to choose from the target."
    )


def _check_target(objective: str, y: np.ndarray) -> None:
    bound = REGRESSION.get(objective)
    if bound is None:
        return
    low, inclusive, words = bound
    smallest = float(y.min())
    largest = float(y.max())
    if smallest < low or (smallest == low and not inclusive) or (objective == "reg:logistic" and largest > 1):
        shown = f"the smallest is {smallest:g}" if smallest <= low else f"the largest is {largest:g}"
        raise UserError(
            f"objective {objective} needs a target {words}, but {shown}. Use reg:squarederror, or leave the "
            "objective unset."
        )


def _xgb_params(params: dict[str, Any], task: str, n_classes: int) -> dict[str, Any]:
    objective = params.get("objective")
    if task == "classification":
        objective = objective or ("binary:logistic" if n_classes == 2 else "multi:softprob")
        if CLASSIFICATION.get(objective):
            print(
                f"note: {objective} trains the same trees as {CLASSIFICATION[objective]}, which predicts "
                "probabilities: it trains as that, so the metrics and the endpoint see probabilities "
                "(labels: Accept application/json; output=labels)",
                file=sys.stderr,
                flush=True,
            )
            objective = CLASSIFICATION[objective]
        if n_classes > 2 and objective.startswith("binary:"):
            raise UserError(
                f"The target has {n_classes} classes but objective is {objective}, which needs exactly 2. "
                "Use multi:softprob, or set problem_type=regression."
            )
        if n_classes == 2 and objective.startswith("multi:"):
            objective = "binary:logistic"  # same model, and predict() returns one probability per row
    else:
        objective = objective or "reg:squarederror"
        if objective in CLASSIFICATION:
            raise UserError(
                f"objective {objective} is a classification objective but problem_type is regression."
            )
    xgb_params: dict[str, Any] = {
        "tree_method": "hist",
        "objective": objective,
        "max_depth": params["max_depth"],
        "eta": params["eta"],
        "subsample": params["subsample"],
        "colsample_bytree": params["colsample_bytree"],
        "min_child_weight": params["min_child_weight"],
        "lambda": params["lambda"],
        "alpha": params["alpha"],
        "gamma": params["gamma"],
        "max_bin": params["max_bin"],
        "seed": params["seed"],
        "nthread": params["nthread"] or os.cpu_count() or 1,
        "verbosity": 1,
    }
    if task == "classification":
        xgb_params["eval_metric"] = "logloss" if n_classes == 2 else "mlogloss"
        if n_classes == 2:
            xgb_params["scale_pos_weight"] = params["scale_pos_weight"]
        else:
            xgb_params["num_class"] = n_classes
    else:
        xgb_params["eval_metric"] = "rmse"
    return xgb_params


def fit(train: Dataset, validation: Dataset | None, params: dict[str, Any], checkpoint_dir: Path) -> Model:
    xgb_params, meta, checkpoint_meta = _prepare(train, params)
    start = checkpoints.resume(checkpoint_dir, checkpoint_meta)
    return _train(train, validation, params, checkpoint_dir, xgb_params, meta, checkpoint_meta, start, None)


def fit_distributed(
    train: Dataset,
    validation: Dataset | None,
    params: dict[str, Any],
    checkpoint_dir: Path,
    cluster: Cluster,
) -> Model:
    """One model trained by every host of the job with XGBoost's collective: each host builds the histograms
    of its own rows, XGBoost sums them across hosts, and every host grows the same trees."""
    xgb_params, meta, checkpoint_meta = _prepare(train, params)
    start = _agreed_checkpoint(checkpoint_dir, checkpoint_meta, cluster)  # before the collective: no deadlock
    try:
        with distributed.communicator(cluster):
            return _train(
                train, validation, params, checkpoint_dir, xgb_params, meta, checkpoint_meta, start, cluster
            )
    except xgb.core.XGBoostError as error:  # its message is a native backtrace: the lines that say what
        raise RuntimeError(f"XGBoost failed: {distributed.summary(error)}") from error


def _agreed_checkpoint(
    checkpoint_dir: Path, checkpoint_meta: dict[str, Any], cluster: Cluster
) -> tuple[xgb.Booster | None, int]:
    """Every host resumes from the same round: the newest that every host can load (its own folder, or another
    host's: the boosters are identical, and SageMaker restores every host's folder on every instance)."""
    mine = checkpoints.rounds_available(checkpoint_dir, siblings=True)
    everyone = cluster.allgather(sorted(mine))
    common = set.intersection(*(set(rounds) for rounds in everyone))
    if not common:
        if any(everyone):
            print(
                f"note: the hosts' checkpoints have no round in common ({dict(zip(cluster.hosts, everyone, strict=True))}): "
                "training starts over",
                file=sys.stderr,
                flush=True,
            )
        return None, 0
    return checkpoints.resume(checkpoint_dir, checkpoint_meta, rounds=max(common), siblings=True)


def _prepare(train: Dataset, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    n_classes = train.num_classes
    if train.task == "classification" and params.get("num_class") and params["num_class"] != n_classes:
        raise UserError(
            f"num_class is {params['num_class']} but the training target has {n_classes} classes "
            f"{(train.classes or [])[:10]}."
        )
    xgb_params = _xgb_params(params, train.task, n_classes)
    if train.task == "regression" and train.y.size:
        _check_target(xgb_params["objective"], train.y)
    meta = {
        "xgboost_version": xgb.__version__,
        "task": train.task,
        "objective": xgb_params["objective"],
        "num_classes": n_classes,
        "num_features": int(train.x.shape[1]),
    }
    checkpoint_meta = {
        "objective": xgb_params["objective"],
        "num_features": meta["num_features"],
        "classes": train.classes,
        "categorical": [name for name in train.feature_names if name in train.categories],
    }
    return xgb_params, meta, checkpoint_meta


def _train(
    train: Dataset,
    validation: Dataset | None,
    params: dict[str, Any],
    checkpoint_dir: Path,
    xgb_params: dict[str, Any],
    meta: dict[str, Any],
    checkpoint_meta: dict[str, Any],
    start: tuple[xgb.Booster | None, int],
    cluster: Cluster | None,
) -> Model:
    leader = cluster is None or cluster.is_leader
    # Text columns arrive as category codes: XGBoost's native categorical splits (partitions of the
    # categories, no one-hot); NaN, a missing or unseen category, takes the default branch.
    types = ["c" if categorical else "q" for categorical in train.categorical]
    categorical = {"feature_types": types, "enable_categorical": True} if "c" in types else {}
    # A sampled sketch would be a collective step that only hosts with many rows take: one host only.
    sample = not categorical and cluster is None
    # QuantileDMatrix bins the float32 matrix directly: no extra full-size copy (memory-efficient). With
    # several hosts, XGBoost merges every host's quantile sketch, so all hosts bin alike.
    dtrain = xgb.QuantileDMatrix(
        train.x,
        label=train.y,
        max_bin=params["max_bin"],
        ref=_sketch_reference(train.x, train.y, params, xgb_params["nthread"]) if sample else None,
        nthread=xgb_params["nthread"],
        **categorical,
    )
    # XGBoost evaluates every matrix in `evals` after every round: the training matrix would cost 1.3 s of
    # 14 s (1M x 20, one core) for progress lines only. Validation alone, for early stopping; the train
    # metrics come from the prediction cache at the end.
    evals = []
    if validation is not None:
        dvalid = xgb.QuantileDMatrix(
            validation.x, label=validation.y, ref=dtrain, nthread=xgb_params["nthread"], **categorical
        )
        evals.append((dvalid, "validation"))

    start_model, done = start
    if start_model is not None:
        print(f"Resuming from checkpoint: {done} of {params['num_round']} rounds already done", flush=True)
    remaining = max(params["num_round"] - done, 0)

    callbacks: list[xgb.callback.TrainingCallback] = [
        checkpoints.Checkpoint(checkpoint_dir, params["checkpoint_every"], checkpoint_meta),
        _Progress(params["num_round"]),
    ]
    early = params["early_stopping_rounds"] if validation is not None else 0
    if early:
        callbacks.append(xgb.callback.EarlyStopping(rounds=early, data_name="validation", save_best=True))
    # Last, so it sees the model early stopping kept: predictions from the training booster's cache (the
    # leader's only: the other hosts report no metrics).
    cache = _CachedPredictions(
        [(train.x, dtrain)] + ([(validation.x, dvalid)] if validation is not None else []) if leader else []
    )
    callbacks.append(cache)
    if remaining:
        booster = xgb.train(
            xgb_params,
            dtrain,
            num_boost_round=remaining,
            evals=evals,
            callbacks=callbacks,
            xgb_model=start_model,
            verbose_eval=False,
        )
    else:
        booster = start_model
    assert booster is not None
    meta["num_round"] = booster.num_boosted_rounds()
    if cluster is not None:
        meta["hosts"] = cluster.world_size
    model = Model(booster=booster, meta=meta)
    if remaining:
        model.cached_predictions.update(cache.predictions)
    return model


class _Progress(xgb.callback.TrainingCallback):
    """A line every tenth of the rounds (with the validation metric when there is one), so a long job's log
    shows it moving."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total, self.every = total, max(total // 10, 1)

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        rounds = model.num_boosted_rounds()
        if rounds % self.every == 0 or rounds == self.total:
            scores = ", ".join(
                f"{data}-{metric} {values[-1]:.6g}"
                for data, log in evals_log.items()
                for metric, values in log.items()
            )
            print(
                f"round {rounds} of {self.total}" + (f": {scores}" if scores else ""),
                file=sys.stderr,
                flush=True,
            )
        return False


class _CachedPredictions(xgb.callback.TrainingCallback):
    """The training and validation matrices' predictions, taken at the end of training from the booster
    that trained: XGBoost keeps them in its prediction cache, so this costs milliseconds (1M rows: 0.01 s
    against 0.5 s). `xgb.train` returns a copy without the cache, which would predict every row again."""

    def __init__(self, matrices: list[tuple[np.ndarray, xgb.DMatrix]]) -> None:
        super().__init__()
        self.matrices = matrices
        self.predictions: dict[int, np.ndarray] = {}

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        for features, matrix in self.matrices:
            self.predictions[id(features)] = model.predict(matrix)
        return model


def estimate_memory(rows: int, features: int, params: dict[str, Any]) -> int:
    """Bytes XGBoost `hist` needs beyond the contract's float32 matrix. Fitted to peak RSS measured here
    (10k-100k features, 200-2,000 rows, depth 3-10, 64-256 bins), erring high by up to 1.5x:
    - the binned matrix: one byte per cell (two above 256 bins);
    - the quantile sketches: ~9 KB per feature at 256 bins, whatever the rows;
    - the gradient histograms: a float64 gradient and hessian per bin, per feature, for every node of a
      tree (up to 2^max_depth, and fewer than the rows can split into). 500k columns need tens of GB."""
    bins = params["max_bin"]
    binned = rows * features * (1 if bins <= 256 else 2)
    sketches = features * (5_000 + 16 * bins)
    nodes = min(2 ** params["max_depth"] + 2, rows // 2 + 2)
    histograms = features * bins * 16 * nodes
    return binned + sketches + histograms


def _sketch_reference(x: np.ndarray, y: np.ndarray, params: dict[str, Any], nthread: int) -> Any:
    """For big data, the bin boundaries (quantiles) from a 200k-row sample: the full sketch is the slowest
    part of building the matrix (2.3 s vs 0.5 s on 1M x 20 here), and 256 quantiles from 200k rows are the
    same to within noise (same RMSE in the bench). Small data: None (the exact sketch)."""
    if x.shape[0] < 4 * SKETCH_SAMPLE_ROWS:  # (categorical data never: a sample may miss a category)
        return None
    rows = np.sort(
        np.random.default_rng(params["seed"]).choice(x.shape[0], SKETCH_SAMPLE_ROWS, replace=False)
    )
    return xgb.QuantileDMatrix(x[rows], label=y[rows], max_bin=params["max_bin"], nthread=nthread)


def save(model: Model, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(directory / MODEL_FILE))
    (directory / META_FILE).write_text(json.dumps(model.meta, indent=2))


def load(directory: Path) -> Model:
    meta = json.loads((directory / META_FILE).read_text())
    booster = xgb.Booster(model_file=str(directory / MODEL_FILE))
    # Serving predicts per request and the workers give the parallelism: one thread each, no oversubscription.
    booster.set_param({"nthread": int(os.environ.get("MODEL_PREDICT_THREADS", "1"))})
    return Model(booster=booster, meta=meta)


def predict(model: Model, features: np.ndarray) -> np.ndarray:
    """Regression: the value. Binary: P(classes[1]). Multiclass: one probability per class."""
    return booster_predict(model.booster, features)


def evaluate(model: Model, dataset: Dataset) -> dict[str, float]:
    predictions = model.cached_predictions.get(id(dataset.x))
    if predictions is None:
        predictions = predict(model, dataset.x)
    return standard_metrics(dataset, predictions)


def describe(model: Model) -> dict[str, Any]:
    return {
        "framework": f"xgboost {model.meta.get('xgboost_version', xgb.__version__)}",
        "objective": model.meta.get("objective"),
        "num_round": model.meta.get("num_round"),
    }
