"""Every model through the same contract: the fake model, the default model and each `examples/*` model.

A model folder in examples/ is picked up by its model.json, so a new example is tested without editing
this file. Each model must train regression and classification, report only the metrics it declares, and
serve the same predictions after a save and load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.container.conftest import (
    FAKE_MODEL,
    METRIC_RE,
    ROOT,
    SAMPLE,
    TrainResult,
    make_opt_ml,
    model_module,
)
from tests.container.contract.test_serving_app import call

EXAMPLES = sorted(f"examples.{path.parent.name}" for path in (ROOT / "examples").glob("*/model.json"))
MODELS = [FAKE_MODEL, "user_model", *EXAMPLES]
Run = Callable[[Path], TrainResult]


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> Iterator[str]:
    with model_module(request.param):
        yield request.param


def test_an_example_model_is_found() -> None:
    assert "examples.linear_model" in EXAMPLES


def iris_like(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """Three classes from four measurements, as sklearn's iris has them (class codes 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    species = rng.integers(0, 3, rows)
    centres = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    x = centres[species] + rng.normal(0, 0.3, (rows, 4))
    lines = ["sepal_length,sepal_width,petal_length,petal_width,species"]
    lines += [",".join(f"{v:.1f}" for v in row) + f",{s}" for row, s in zip(x, species, strict=True)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "iris.csv").write_text("\n".join(lines) + "\n")
    return path


def declared(name: str) -> set[str]:
    from sagemaker_contract.interface import load_model_plugin

    return set(load_model_plugin(name).metric_names)


def test_regression_trains_and_serves_the_same_predictions(
    model: str, tmp_path: Path, run_train: Run
) -> None:
    opt = make_opt_ml(tmp_path / "ml")
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    metrics = re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)
    assert {name for _, name, _ in metrics} <= declared(model)
    assert {channel for channel, _, _ in metrics} == {"train", "validation"}
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    assert meta["task"] == "regression" and meta["model_module"] == model

    from sagemaker_contract.interface import load_model_plugin
    from sagemaker_contract.serving import create_app

    lines = (SAMPLE / "validation" / "validation.csv").read_text().splitlines()[1:21]
    rows = [line.split(",", 1)[1] for line in lines]
    plugin = load_model_plugin(model)
    expected = plugin.predict(
        plugin.load(opt / "model"), np.array([r.split(",") for r in rows], dtype=np.float32)
    )
    status, _, body = call(create_app(opt / "model"), "POST", "/invocations", "\n".join(rows).encode())
    assert status == 200
    np.testing.assert_allclose([float(v) for v in body.split()], expected, rtol=1e-6)
    assert np.all(np.isfinite(expected))


def test_classification_trains_and_answers_probabilities(model: str, tmp_path: Path, run_train: Run) -> None:
    source = iris_like(tmp_path / "iris")
    opt = make_opt_ml(tmp_path / "ml", {"target": "species"}, {"train": source})
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    metrics = {name: float(v) for _, name, v in re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)}
    assert set(metrics) <= declared(model)
    if "accuracy" in metrics and model != FAKE_MODEL:
        assert metrics["accuracy"] > 0.9  # well-separated classes
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    assert meta["task"] == "classification" and meta["classes"] == [0, 1, 2]

    from sagemaker_contract.serving import create_app

    status, _, body = call(
        create_app(opt / "model"),
        "POST",
        "/invocations",
        b"5.0,3.4,1.5,0.2\n6.6,3.0,5.6,2.0",
        {"Content-Type": "text/csv", "Accept": "application/json"},
    )
    assert status == 200, body
    probabilities = np.array(json.loads(body)["predictions"])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_cdk_json_hyperparameters_are_overrides_every_model_accepts(model: str) -> None:
    """cdk.json only overrides, and its example must not tie the pipeline to one model's hyperparameters."""
    from sagemaker_contract import hyperparameters
    from sagemaker_contract.interface import load_model_plugin

    configured = json.loads((ROOT / "cdk.json").read_text())["context"]["hyperparameters"]
    params = hyperparameters.parse(configured, load_model_plugin(model).hyperparameters)
    defaults = hyperparameters.parse({}, load_model_plugin(model).hyperparameters)
    assert params == defaults, "cdk.json's example should restate defaults only"


def test_readme_states_the_default_models_defaults() -> None:
    """container/README.md's hyperparameter table and user_model's HYPERPARAMETERS say the same."""
    from user_model import HYPERPARAMETERS

    readme = (ROOT / "container" / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([-\w.]+) \|", readme, flags=re.MULTILINE)
    checked = 0
    for name, default in rows:
        if name in HYPERPARAMETERS and HYPERPARAMETERS[name].default is not None:
            assert float(default) == float(HYPERPARAMETERS[name].default), name
            checked += 1
    assert checked >= 5


def test_text_labels_and_categorical_features(model: str, tmp_path: Path, run_train: Run) -> None:
    """A table with text columns, missing values and booleans, and a text target: every model trains on it."""
    from tests.container import tables

    frame = tables.titanic()
    frame["survived"] = np.where(frame["survived"] == 1, "yes", "no")
    (tmp_path / "t").mkdir()
    frame.to_csv(tmp_path / "t" / "titanic.csv", index=False)
    opt = make_opt_ml(tmp_path / "ml", channels={"train": tmp_path / "t"})
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    assert meta["classes"] == ["no", "yes"] and meta["categories"]["sex"] == ["female", "male"]
    metrics = {name: float(v) for _, name, v in re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)}
    if model != FAKE_MODEL:
        assert metrics["accuracy"] > 0.75  # sex and class decide most of it
    from sagemaker_contract.serving import create_app

    rows = frame.drop(columns="survived").iloc[:20].to_csv(index=False, header=False).encode()
    status, _, body = call(
        create_app(opt / "model"), "POST", "/invocations", rows,
        {"Content-Type": "text/csv", "Accept": "application/json; output=probabilities"},
    )  # fmt: skip
    assert status == 200, body
    answers = json.loads(body)["predictions"]
    assert len(answers) == 20 and all(a["label"] in ("no", "yes") for a in answers)
    assert all(set(a["probabilities"]) == {"no", "yes"} for a in answers)
