"""`train` in-process on a temporary /opt/ml tree: success, every bad input, checkpoints."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.container.conftest import METRIC_RE, SAMPLE, TrainResult, make_opt_ml

Run = Callable[[Path], TrainResult]


def assert_failed(result: TrainResult, *fragments: str) -> str:
    assert result.exit_code != 0
    assert result.failure, "no failure file"
    reason = result.failure
    assert "\n" not in reason.strip(), "the failure reason must be one paragraph"
    assert "Traceback" not in reason
    for fragment in fragments:
        assert fragment.lower() in reason.lower(), reason
    assert result.model_files == [], f"partial model left behind: {result.model_files}"
    return reason


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_train_success_writes_model_and_metric_lines(tmp_path: Path, run_train: Run) -> None:
    result = run_train(make_opt_ml(tmp_path / "ml"))
    assert result.exit_code == 0, result.stderr
    assert result.failure is None
    assert result.model_files == ["model-meta.json", "xgboost-model.ubj"]
    metrics = re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)
    names = {(channel, name) for channel, name, _ in metrics}
    assert {("validation", "rmse"), ("validation", "mae"), ("validation", "r2"), ("train", "rmse")} <= names
    rmse = float(re.search(r"^METRIC validation:rmse=(\S+)$", result.stdout, re.MULTILINE).group(1))
    r2 = float(re.search(r"^METRIC validation:r2=(\S+)$", result.stdout, re.MULTILINE).group(1))
    assert 0 < rmse < 0.5 and r2 > 0.8  # the sample data is learnable
    meta = json.loads((tmp_path / "ml" / "model" / "model-meta.json").read_text())
    assert meta["target_name"] == "median_house_value" and meta["problem_type"] == "regression"
    assert (tmp_path / "ml" / "model" / "xgboost-model.ubj").stat().st_mode & 0o044 == 0o044  # host-readable


def test_train_only_channel_and_parquet_many_files_and_named_target(tmp_path: Path, run_train: Run) -> None:
    # Parquet in two files, target not first, classification inferred from 0/1 labels, no validation.
    rng = np.random.default_rng(1)
    source = tmp_path / "parquet"
    source.mkdir()
    for part in range(2):
        x = rng.normal(size=(300, 4)).astype(np.float32)
        label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
        table = pa.table({"a": x[:, 0], "b": x[:, 1], "label": label, "c": x[:, 2], "d": x[:, 3]})
        pq.write_table(table, source / f"part-{part}.parquet")
    opt = make_opt_ml(tmp_path / "ml", {"target": "label", "num_round": "20"}, {"train": source})
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    assert "METRIC train:accuracy=" in result.stdout and "METRIC train:auc=" in result.stdout
    assert "validation:" not in result.stdout
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    assert meta["problem_type"] == "classification" and meta["feature_names"] == ["a", "b", "c", "d"]


def test_headerless_csv_uses_first_column(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "headerless"
    lines = (SAMPLE / "train" / "train.csv").read_text().splitlines()[1:]
    write(source / "data.csv", "\n".join(lines) + "\n")
    result = run_train(make_opt_ml(tmp_path / "ml", {"num_round": "10"}, {"train": source}))
    assert result.exit_code == 0, result.failure
    assert "METRIC train:rmse=" in result.stdout


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
def test_missing_train_channel(tmp_path: Path, run_train: Run) -> None:
    result = run_train(make_opt_ml(tmp_path / "ml", channels={"validation": None}))
    assert_failed(result, "no 'train' channel", "validation")


def test_empty_file(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "empty"
    write(source / "train.csv", "")
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "no data rows", "empty"
    )


def test_header_only_file(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "header"
    write(source / "train.csv", "y,a,b\n")
    assert_failed(run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "no data rows")


def test_empty_channel_folder(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "nothing"
    source.mkdir()
    assert_failed(run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "no data files")


def test_missing_target_column(tmp_path: Path, run_train: Run) -> None:
    result = run_train(make_opt_ml(tmp_path / "ml", {"target": "price"}))
    assert_failed(result, "target column 'price' is not in", "median_house_value")


def test_non_numeric_feature(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "garbage"
    lines = (SAMPLE / "train" / "train.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[3] = "lots"
    lines[5] = ",".join(cells)
    write(source / "train.csv", "\n".join(lines) + "\n")
    reason = assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "avg_rooms", "'lots'"
    )
    assert "non-numeric" in reason and "row 5" in reason


def test_missing_target_values(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "notarget"
    write(source / "t.csv", "y,a\n1,2\n,3\n4,5\n")
    assert_failed(run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "missing value")


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


def test_first_failure_reason_wins(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml", {"max_depth": "-1"})
    write(opt / "output" / "failure", "an earlier, more specific reason\n")
    result = run_train(opt)
    assert result.exit_code != 0 and result.failure == "an earlier, more specific reason\n"


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
    assert meta["num_round"] == 30


def test_corrupt_checkpoint(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml")
    write(opt / "checkpoints" / "checkpoint-10.ubj", "this is not a model")
    assert_failed(run_train(opt), "checkpoint-10.ubj", "could not be read", "delete")


def test_checkpoint_for_other_data(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml", {"num_round": "10", "checkpoint_every": "5"})
    assert run_train(opt).exit_code == 0
    (opt / "model" / "model-meta.json").unlink()
    (opt / "model" / "xgboost-model.ubj").unlink()
    meta = opt / "checkpoints" / "checkpoint-meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "num_features": 99}))
    assert_failed(run_train(opt), "different data")


def test_metric_line_format() -> None:
    from sagemaker_contract.training import metric_line

    assert metric_line("validation", "rmse", 0.42134567) == "METRIC validation:rmse=0.421346"
    assert re.match(METRIC_RE, metric_line("train", "r2", -1.5e-7))
