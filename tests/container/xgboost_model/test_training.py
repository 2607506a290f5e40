"""`train` in-process with the default model (XGBoost): what is specific to it, and checkpoints."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.container.conftest import METRIC_RE, TrainResult, assert_failed, make_opt_ml, write

Run = Callable[[Path], TrainResult]


def test_train_success_writes_model_and_metric_lines(tmp_path: Path, run_train: Run) -> None:
    result = run_train(make_opt_ml(tmp_path / "ml"))  # no hyperparameters: the model's own defaults
    assert result.exit_code == 0, result.stderr
    assert result.failure is None
    assert result.model_files == ["model-meta.json", "xgboost-meta.json", "xgboost-model.ubj"]
    metrics = re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)
    names = {(channel, name) for channel, name, _ in metrics}
    assert {("validation", "rmse"), ("validation", "mae"), ("validation", "r2"), ("train", "rmse")} <= names
    rmse = float(re.search(r"^METRIC validation:rmse=(\S+)$", result.stdout, re.MULTILINE).group(1))
    r2 = float(re.search(r"^METRIC validation:r2=(\S+)$", result.stdout, re.MULTILINE).group(1))
    assert 0 < rmse < 0.5 and r2 > 0.8  # the sample data is learnable
    meta = json.loads((tmp_path / "ml" / "model" / "model-meta.json").read_text())
    assert meta["target"] == "median_house_value" and meta["task"] == "regression"
    assert meta["model"]["objective"] == "reg:squarederror" and meta["model_name"] == "xgboost"
    assert '"eta": 0.3' in result.stderr  # the default lives in the model (container/README.md says so too)
    assert (tmp_path / "ml" / "model" / "xgboost-model.ubj").stat().st_mode & 0o044 == 0o044  # host-readable


def test_multiclass_objective(tmp_path: Path, run_train: Run) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    source = tmp_path / "multi"
    write(
        source / "d.csv",
        "y,a,b,c\n" + "\n".join(f"{t},{a:.3f},{b:.3f},{c:.3f}" for t, (a, b, c) in zip(y, x, strict=True)),
    )
    result = run_train(
        make_opt_ml(tmp_path / "ml", {"num_round": "10", "objective": "multi:softprob"}, {"train": source})
    )
    assert result.exit_code == 0, result.failure
    assert "METRIC train:logloss=" in result.stdout


# -- bad input: each gives a readable failure file, a non-zero exit and no model ---------------------------
@pytest.mark.parametrize(
    ("hyperparameters", "fragments"),
    [
        ({"max_depth": "-1"}, ("max_depth is -1", "from 1 to 32")),
        ({"num_round": "many"}, ("num_round must be a whole number", "'many'")),
        ({"eta": "1.5"}, ("eta is 1.5",)),
        ({"eta": "abc"}, ("eta must be a number",)),
        ({"max_dept": "4"}, ("unknown hyperparameter max_dept", "did you mean max_depth")),
        ({"problem_type": "ranking"}, ("problem_type",)),
    ],
)
def test_bad_hyperparameters(tmp_path: Path, run_train: Run, hyperparameters: dict, fragments: tuple) -> None:
    reason = assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", {"num_round": "10", **hyperparameters})), *fragments
    )
    assert reason.startswith("Invalid hyperparameters")


# -- checkpoints ----------------------------------------------------------------------------------------------
def test_checkpoint_resume(tmp_path: Path, run_train: Run) -> None:
    hp = {"num_round": "20", "checkpoint_every": "5", "early_stopping_rounds": "0"}
    opt = make_opt_ml(tmp_path / "ml", hp)
    first = run_train(opt)
    assert first.exit_code == 0, first.failure
    checkpoints = sorted(p.name for p in (opt / "checkpoints").glob("checkpoint-*.ubj"))
    assert checkpoints == ["checkpoint-15.ubj", "checkpoint-20.ubj"]  # the newest two are kept
    # A spot interruption after round 20 of 30: the next run continues from the checkpoint.
    (opt / "input" / "config" / "hyperparameters.json").write_text(json.dumps({**hp, "num_round": "30"}))
    second = run_train(opt)
    assert second.exit_code == 0, second.failure
    assert "Resuming from checkpoint: 20 of 30 rounds" in second.stdout
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    assert meta["model"]["num_round"] == 30


def test_corrupt_checkpoint(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml")
    write(opt / "checkpoints" / "checkpoint-10.ubj", "this is not a model")
    assert_failed(run_train(opt), "checkpoint-10.ubj", "could not be read", "delete")


def test_checkpoint_for_other_data(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml", {"num_round": "10", "checkpoint_every": "5"})
    assert run_train(opt).exit_code == 0
    for path in (opt / "model").iterdir():
        path.unlink()
    meta = opt / "checkpoints" / "checkpoint-meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "num_features": 99}))
    assert_failed(run_train(opt), "different data")


def test_wide_rows_that_do_not_fit_fail_with_a_sentence(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500k columns in a 1-2 MB file: XGBoost's histograms would need many GB. Fail before, with a reason."""
    import time

    from sagemaker_contract import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 10**9)
    source = tmp_path / "wide"
    source.mkdir()
    rng = np.random.default_rng(0)
    rows = [",".join(rng.integers(0, 2, 500_000).astype(str)) for _ in range(2)]
    (source / "wide.csv").write_text("\n".join(rows) + "\n")
    assert 1e6 < (source / "wide.csv").stat().st_size < 3e6
    started = time.perf_counter()
    reason = assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "needs an estimated"
    )
    assert "499,999 features" in reason and "8.0 GB" in reason
    assert time.perf_counter() - started < 30


def test_memory_estimate_is_sane_for_ordinary_data() -> None:
    import user_model

    params = {"max_bin": 256, "max_depth": 6}
    assert user_model.estimate_memory(1_000_000, 20, params) < 100e6  # the 1M x 20 bench trains in ~350 MB
    assert user_model.estimate_memory(2, 500_000, params) > 4e9


# -- objectives: only those whose outputs are evaluated correctly ---------------------------------------------
def classes_csv(tmp_path: Path, n_classes: int) -> Path:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 3))
    y = np.digitize(x[:, 0] + 0.3 * x[:, 1], np.linspace(-1, 1, n_classes - 1))
    return write(
        tmp_path / f"c{n_classes}" / "d.csv",
        "y,a,b,c\n" + "\n".join(f"{t},{a:.3f},{b:.3f},{c:.3f}" for t, (a, b, c) in zip(y, x, strict=True)),
    ).parent


def train_metrics(
    run_train: Run, tmp_path: Path, source: Path, hp: dict
) -> tuple[TrainResult, dict[str, float]]:
    result = run_train(make_opt_ml(tmp_path, {"num_round": "20", **hp}, {"train": source}))
    assert result.exit_code == 0, result.failure
    return result, {n: float(v) for _, n, v in re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)}


def test_multi_softmax_trains_and_is_evaluated_on_probabilities(tmp_path: Path, run_train: Run) -> None:
    source = classes_csv(tmp_path, 3)
    result, softmax = train_metrics(run_train, tmp_path / "a", source, {"objective": "multi:softmax"})
    _, softprob = train_metrics(run_train, tmp_path / "b", source, {"objective": "multi:softprob"})
    assert softmax == pytest.approx(softprob, rel=1e-6)  # the same trees; probabilities, not class indices
    assert 0 < softmax["logloss"] < 1.1 and softmax["accuracy"] > 0.7
    assert "multi:softmax trains the same trees as multi:softprob" in result.stderr


def test_binary_logitraw_is_evaluated_as_probabilities(tmp_path: Path, run_train: Run) -> None:
    source = classes_csv(tmp_path, 2)
    _, logitraw = train_metrics(run_train, tmp_path / "a", source, {"objective": "binary:logitraw"})
    _, logistic = train_metrics(run_train, tmp_path / "b", source, {"objective": "binary:logistic"})
    assert logitraw == pytest.approx(logistic, rel=1e-6)
    assert logitraw["logloss"] < 0.6


@pytest.mark.parametrize(
    ("objective", "fragments"),
    [
        ("binary:hinge", ("binary:hinge predicts 0 or 1 without a probability", "binary:logistic")),
        ("rank:pairwise", ("objective rank:pairwise is not supported", "multi:softprob")),
        ("survival:cox", ("objective survival:cox is not supported",)),
        ("reg:nonsense", ("objective reg:nonsense is not supported",)),
    ],
)
def test_objectives_that_cannot_be_evaluated_are_refused_up_front(
    tmp_path: Path, run_train: Run, objective: str, fragments: tuple
) -> None:
    result = run_train(
        make_opt_ml(tmp_path / "ml", {"objective": objective}, {"train": classes_csv(tmp_path, 2)})
    )
    assert_failed(result, *fragments)
    assert "Training failed with an unexpected error" not in (result.failure or "")


@pytest.mark.parametrize(
    ("objective", "fragment"),
    [
        ("reg:gamma", "reg:gamma needs a target above 0"),
        ("count:poisson", "count:poisson needs a target of at least 0"),
        ("reg:squaredlogerror", "reg:squaredlogerror needs a target above -1"),
    ],
)
def test_an_objective_the_target_does_not_suit(
    tmp_path: Path, run_train: Run, objective: str, fragment: str
) -> None:
    source = write(
        tmp_path / "neg" / "d.csv", "y,a\n" + "".join(f"{i - 10.5},{i}\n" for i in range(40))
    ).parent
    result = run_train(make_opt_ml(tmp_path / "ml", {"objective": objective}, {"train": source}))
    assert_failed(result, fragment, "smallest is -10.5")


@pytest.mark.parametrize(
    "objective", ["reg:absoluteerror", "reg:pseudohubererror", "count:poisson", "reg:tweedie"]
)
def test_other_regression_objectives_train(tmp_path: Path, run_train: Run, objective: str) -> None:
    source = write(
        tmp_path / "pos" / "d.csv", "y,a\n" + "".join(f"{(i % 7) + 1},{i % 7}\n" for i in range(70))
    ).parent
    _, metrics = train_metrics(run_train, tmp_path / "ml", source, {"objective": objective})
    assert {"rmse", "mae", "r2"} <= set(metrics)


def test_checkpoint_for_columns_of_another_kind(tmp_path: Path, run_train: Run) -> None:
    from tests.container import tables

    frame = tables.titanic()[["survived", "pclass", "sex", "age"]]
    write(tmp_path / "t" / "d.csv", frame.to_csv(index=False))
    opt = make_opt_ml(
        tmp_path / "ml", {"num_round": "10", "checkpoint_every": "5"}, {"train": tmp_path / "t"}
    )
    assert run_train(opt).exit_code == 0
    for path in (opt / "model").iterdir():
        path.unlink()
    # Same number of columns, but sex is now a number: the trees of the checkpoint split it as a category.
    frame = frame.assign(sex=(frame["sex"] == "male").astype(int))
    write(opt / "input" / "data" / "train" / "d.csv", frame.to_csv(index=False))
    assert_failed(run_train(opt), "different data")
