"""`train` in-process on a temporary /opt/ml tree, with the fake model: the contract's side of training."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.container.conftest import METRIC_RE, SAMPLE, TrainResult, assert_failed, make_opt_ml, write

Run = Callable[[Path], TrainResult]


def metric(stdout: str, channel: str, name: str) -> float:
    match = re.search(rf"^METRIC {channel}:{name}=(\S+)$", stdout, re.MULTILINE)
    assert match, f"no {channel}:{name} metric in {stdout[-2000:]}"
    return float(match.group(1))


def test_train_success_writes_model_and_metric_lines(tmp_path: Path, run_train: Run) -> None:
    result = run_train(make_opt_ml(tmp_path / "ml"))
    assert result.exit_code == 0, result.stderr
    assert result.failure is None
    assert result.model_files == ["fake-model.json", "model-meta.json"]
    metrics = re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)
    names = {(channel, name) for channel, name, _ in metrics}
    # The fake model has no evaluate(): the contract's default reports the task's standard metrics.
    assert names == {(c, n) for c in ("train", "validation") for n in ("rmse", "mae", "r2")}
    assert metric(result.stdout, "validation", "r2") > 0.5  # least squares learns the sample data
    meta = json.loads((tmp_path / "ml" / "model" / "model-meta.json").read_text())
    assert meta["target"] == "median_house_value" and meta["task"] == "regression"
    assert meta["model_module"] == "tests.container.fake_model" and meta["model_name"] == "fake"
    assert len(meta["feature_names"]) == 8
    assert (tmp_path / "ml" / "model" / "fake-model.json").stat().st_mode & 0o044 == 0o044  # host-readable
    # The same facts reach the job's output and its log.
    assert json.loads((tmp_path / "ml" / "output" / "data" / "model-meta.json").read_text()) == meta
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODEL-META "))
    summary = json.loads(line.removeprefix("MODEL-META "))
    assert summary["task"] == "regression" and summary["final_metrics_channel"] == "validation"
    assert "task: regression (inferred" in result.stderr


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
    opt = make_opt_ml(tmp_path / "ml", {"target": "label"}, {"train": source})
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    assert "METRIC train:accuracy=" in result.stdout and "METRIC train:auc=" in result.stdout
    assert metric(result.stdout, "train", "accuracy") > 0.8
    assert "validation:" not in result.stdout
    meta = json.loads((opt / "model" / "model-meta.json").read_text())
    assert meta["task"] == "classification" and meta["feature_names"] == ["a", "b", "c", "d"]
    assert meta["classes"] == [0, 1] and meta["final_metrics_channel"] == "train"


def test_headerless_csv_uses_first_column(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "headerless"
    lines = (SAMPLE / "train" / "train.csv").read_text().splitlines()[1:]
    write(source / "data.csv", "\n".join(lines) + "\n")
    result = run_train(make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert result.exit_code == 0, result.failure
    assert "METRIC train:rmse=" in result.stdout


def test_class_codes_train_a_classifier_and_say_so(tmp_path: Path, run_train: Run) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    source = tmp_path / "multi"
    write(
        source / "d.csv",
        "y,a,b,c\n" + "\n".join(f"{t},{a:.3f},{b:.3f},{c:.3f}" for t, (a, b, c) in zip(y, x, strict=True)),
    )
    result = run_train(make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert result.exit_code == 0, result.failure
    assert "METRIC train:logloss=" in result.stdout
    assert (
        "task: classification (inferred: the target holds class codes 0..2); 3 classes: 0, 1, 2"
        in result.stderr
    )


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


def test_validation_class_missing_from_train(tmp_path: Path, run_train: Run) -> None:
    write(tmp_path / "train" / "t.csv", "y,a\n" + "".join(f"{i % 2},{i}\n" for i in range(20)))
    write(tmp_path / "validation" / "v.csv", "y,a\n0,1\n1,2\n2,3\n")
    opt = make_opt_ml(
        tmp_path / "ml", channels={"train": tmp_path / "train", "validation": tmp_path / "validation"}
    )
    assert_failed(run_train(opt), "target values [2]", "never occur in the training data")


@pytest.mark.parametrize(
    ("hyperparameters", "fragments"),
    [
        ({"ridge": "-1"}, ("ridge is -1", "at least 0")),
        ({"ridge": "abc"}, ("ridge must be a number", "'abc'")),
        ({"rdge": "4"}, ("unknown hyperparameter rdge", "did you mean ridge")),
        ({"problem_type": "ranking"}, ("problem_type",)),
        ({"num_round": "10"}, ("unknown hyperparameter num_round",)),  # another model's hyperparameter
    ],
)
def test_bad_hyperparameters(tmp_path: Path, run_train: Run, hyperparameters: dict, fragments: tuple) -> None:
    reason = assert_failed(run_train(make_opt_ml(tmp_path / "ml", hyperparameters)), *fragments)
    assert reason.startswith("Invalid hyperparameters")


def test_first_failure_reason_wins(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml", {"ridge": "-1"})
    write(opt / "output" / "failure", "an earlier, more specific reason\n")
    result = run_train(opt)
    assert result.exit_code != 0 and result.failure == "an earlier, more specific reason\n"


def test_metric_line_format() -> None:
    from sagemaker_contract.training import metric_line

    assert metric_line("validation", "rmse", 0.42134567) == "METRIC validation:rmse=0.421346"
    assert re.match(METRIC_RE, metric_line("train", "r2", -1.5e-7))


# -- the optional test channel: final metrics on data neither training nor early stopping saw ---------------
def split_sample(tmp_path: Path) -> dict[str, Path]:
    lines = (SAMPLE / "validation" / "validation.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    write(tmp_path / "validation" / "v.csv", "\n".join([header, *rows[:250]]) + "\n")
    write(tmp_path / "test" / "t.csv", "\n".join([header, *rows[250:]]) + "\n")
    return {"train": SAMPLE / "train", "validation": tmp_path / "validation", "test": tmp_path / "test"}


def test_test_channel_metrics_are_the_final_ones(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml", channels=split_sample(tmp_path))
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    channels = {channel for channel, _, _ in re.findall(METRIC_RE, result.stdout, flags=re.MULTILINE)}
    assert channels == {"train", "validation", "test"}
    meta = json.loads((opt / "output" / "data" / "model-meta.json").read_text())
    assert meta["final_metrics_channel"] == "test" and meta["rows"] == {
        "train": 2000,
        "validation": 250,
        "test": 250,
    }
    assert meta["metrics"]["test"]["rmse"] == pytest.approx(metric(result.stdout, "test", "rmse"), rel=1e-5)

    # The test metrics are the model's on the test rows, recomputed here from its predictions.
    from sagemaker_contract.interface import load_model_plugin

    plugin = load_model_plugin()
    rows = np.loadtxt(tmp_path / "test" / "t.csv", delimiter=",", skiprows=1, dtype=np.float32)
    predictions = plugin.predict(plugin.load(opt / "model"), rows[:, 1:])
    rmse = float(np.sqrt(np.mean((predictions.astype(np.float64) - rows[:, 0]) ** 2)))
    assert metric(result.stdout, "test", "rmse") == pytest.approx(rmse, rel=1e-5)


def test_test_channel_without_validation(tmp_path: Path, run_train: Run) -> None:
    channels = split_sample(tmp_path)
    del channels["validation"]
    opt = make_opt_ml(tmp_path / "ml", channels=channels)
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    assert "METRIC test:r2=" in result.stdout and "validation:" not in result.stdout
    assert json.loads((opt / "model" / "model-meta.json").read_text())["final_metrics_channel"] == "test"


def test_test_channel_with_other_columns(tmp_path: Path, run_train: Run) -> None:
    channels = split_sample(tmp_path)
    write(channels["test"] / "t.csv", "a,b\n1,2\n3,4\n")
    assert_failed(run_train(make_opt_ml(tmp_path / "ml", channels=channels)), "test channel's columns differ")


def test_test_channel_class_missing_from_train(tmp_path: Path, run_train: Run) -> None:
    write(tmp_path / "train" / "t.csv", "y,a\n" + "".join(f"{i % 2},{i}\n" for i in range(20)))
    write(tmp_path / "test" / "t.csv", "y,a\n0,1\n1,2\n2,3\n")
    opt = make_opt_ml(tmp_path / "ml", channels={"train": tmp_path / "train", "test": tmp_path / "test"})
    assert_failed(run_train(opt), "'test' channel", "target values [2]")


# -- golden.json: the deploy pipeline's golden set, written by the job itself ----------------------------------
def test_train_writes_the_golden_set_that_serve_answers_the_same(tmp_path: Path, run_train: Run) -> None:
    """Validation rows without the target, in training column order, and the saved model's answers to them;
    posted again to the serving app (what `serve` runs), each row gets exactly the recorded prediction."""
    import io

    from pipeline_common.endpoints import GOLDEN_NAME
    from sagemaker_contract.golden import GOLDEN_FILE, GOLDEN_ROWS
    from sagemaker_contract.serving import InferenceApp

    assert GOLDEN_FILE == GOLDEN_NAME
    opt = make_opt_ml(tmp_path / "ml")
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    golden = json.loads((opt / "output" / "data" / GOLDEN_FILE).read_text())
    validation = (SAMPLE / "validation" / "validation.csv").read_text().splitlines()
    assert golden["content_type"] == "text/csv"
    assert len(golden["rows"]) == len(golden["predictions"]) == min(GOLDEN_ROWS, len(validation) - 1)
    first = validation[1].split(",")
    # The target dropped; the values as training read them (float32).
    assert [float(v) for v in golden["rows"][0].split(",")] == pytest.approx(
        [float(v) for v in first[1:]], rel=1e-6
    )
    assert f"golden set: {len(golden['rows'])} validation rows" in result.stderr
    app = InferenceApp(opt / "model")
    for row, expected in list(zip(golden["rows"], golden["predictions"], strict=True))[:25]:
        body = f"{row}\n".encode()
        environ = {
            "PATH_INFO": "/invocations",
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": "text/csv",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        answer = b"".join(app(environ, lambda *args: None)).decode()
        assert float(answer.split(",")[0]) == expected


def test_no_validation_channel_no_golden_set_and_no_failure(tmp_path: Path, run_train: Run) -> None:
    opt = make_opt_ml(tmp_path / "ml", channels={"train": None})
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    assert not (opt / "output" / "data" / "golden.json").exists()
    assert "no golden set: the job has no validation channel" in result.stderr
