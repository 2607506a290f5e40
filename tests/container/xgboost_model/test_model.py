"""The default model's own pieces: the fast predict path, objectives, categorical features."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.container.conftest import SAMPLE, make_opt_ml

ROWS = [
    line.split(",", 1)[1] for line in (SAMPLE / "validation" / "validation.csv").read_text().splitlines()[1:]
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sagemaker_contract import training

    opt = make_opt_ml(tmp_path_factory.mktemp("xgb") / "ml", {"num_round": "30"})
    previous = os.environ.get("OPT_ML_DIR")
    os.environ["OPT_ML_DIR"] = str(opt)
    try:
        assert training.main() == 0
    finally:
        if previous is None:
            os.environ.pop("OPT_ML_DIR")
        else:
            os.environ["OPT_ML_DIR"] = previous
    return opt / "model"


def test_fast_predict_matches_inplace_predict(model_dir: Path, tmp_path: Path) -> None:
    import user_model
    import xgboost as xgb
    from user_model import fast_predict

    assert fast_predict.fast_predict is not None
    model = user_model.load(model_dir)
    x = np.array([[float(v) for v in row.split(",")] for row in ROWS[:200]], dtype=np.float32)
    np.testing.assert_array_equal(user_model.predict(model, x), model.booster.inplace_predict(x))
    # Multiclass: one row of probabilities per input row.
    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 4)).astype(np.float32)
    labels = np.digitize(features[:, 0], [-0.5, 0.5]).astype(np.float32)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(features, label=labels), 5
    )
    multi = user_model.Model(booster=booster, meta={"task": "classification"})
    got = user_model.predict(multi, features[:7])
    assert got.shape == (7, 3)
    np.testing.assert_allclose(got, booster.inplace_predict(features[:7]), rtol=1e-6)
    # The reused proxy (one per thread) holds only the current call's data: other shapes and models after it.
    for rows in (x[:1], x[5:8], x):
        np.testing.assert_array_equal(
            fast_predict.fast_predict(model.booster, rows), model.booster.inplace_predict(rows)
        )


def test_text_columns_train_as_native_categorical_features(tmp_path: Path) -> None:
    import xgboost as xgb
    from sagemaker_contract import training

    from tests.container import tables

    source = tmp_path / "titanic"
    source.mkdir()
    tables.titanic().to_csv(source / "titanic.csv", index=False)
    opt = make_opt_ml(tmp_path / "ml", {"num_round": "20"}, {"train": source})
    os.environ["OPT_ML_DIR"] = str(opt)
    try:
        assert training.main() == 0, (opt / "output" / "failure").read_text()
    finally:
        os.environ.pop("OPT_ML_DIR")
    booster = xgb.Booster(model_file=str(opt / "model" / "xgboost-model.ubj"))
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    types = dict(zip(meta["feature_names"], booster.feature_types, strict=True))
    assert types["sex"] == "c" and types["embarked"] == "c" and types["name"] == "c"
    assert types["age"] == "q" and types["alone"] == "q"


def test_train_and_validation_metrics_come_from_xgboosts_prediction_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """xgb.train returns a copy of the booster without its prediction cache; predicting the training matrix
    again with it cost 0.5 s on 1M rows. The predictions are taken before the copy, and must be the same."""
    import user_model
    import xgboost as xgb
    from sagemaker_contract import training
    from user_model import model as xgb_model

    calls: list[int] = []
    original = xgb_model.booster_predict
    monkeypatch.setattr(xgb_model, "booster_predict", lambda b, x: calls.append(len(x)) or original(b, x))
    opt = make_opt_ml(tmp_path / "ml", {"num_round": "30", "early_stopping_rounds": "5"})
    os.environ["OPT_ML_DIR"] = str(opt)
    try:
        assert training.main() == 0
    finally:
        os.environ.pop("OPT_ML_DIR")
    # The only predictions after fit are the golden set's, one served row at a time (sagemaker_contract.golden);
    # the metrics predicting again would show up as the whole train or validation matrix.
    golden = json.loads((opt / "output" / "data" / "golden.json").read_text())
    assert calls == [1] * len(golden["rows"]), (
        "train and validation metrics predicted again instead of coming from the cache"
    )
    # The cached predictions are the model's: the metrics match a fresh prediction of the saved model.
    model = user_model.load(opt / "model")
    rows = np.loadtxt(SAMPLE / "validation" / "validation.csv", delimiter=",", skiprows=1, dtype=np.float32)
    fresh = model.booster.inplace_predict(rows[:, 1:])
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    rmse = float(np.sqrt(np.mean((fresh.astype(np.float64) - rows[:, 0]) ** 2)))
    assert meta["metrics"]["validation"]["rmse"] == pytest.approx(rmse, rel=1e-6)
    assert isinstance(model.booster, xgb.Booster)


def test_the_training_matrix_is_not_evaluated_every_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XGBoost evaluates every matrix in `evals` after every round (1M x 20: 1.3 s of 14 s on one core), and
    the train metrics come from the prediction cache at the end anyway: only validation, for early stopping."""
    import xgboost as xgb
    from sagemaker_contract import training

    evaluated: list[str] = []
    original = xgb.Booster.eval_set

    def spy(self, evals, iteration=0, feval=None, output_margin=True):
        evaluated.extend(name for _, name in evals)
        return original(self, evals, iteration, feval, output_margin)

    monkeypatch.setattr(xgb.Booster, "eval_set", spy)
    opt = make_opt_ml(tmp_path / "ml", {"num_round": "20", "early_stopping_rounds": "50"})
    os.environ["OPT_ML_DIR"] = str(opt)
    try:
        assert training.main() == 0
    finally:
        os.environ.pop("OPT_ML_DIR")
    assert evaluated and set(evaluated) == {"validation"}
