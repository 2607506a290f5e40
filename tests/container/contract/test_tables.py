"""Real tables, no preprocessing: the shapes pandas writes, trained and served as they are (fake model)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.container import tables
from tests.container.conftest import METRIC_RE, TrainResult, make_opt_ml
from tests.container.contract.test_serving_app import call

Run = Callable[[Path], TrainResult]


def folder(path: Path, frame: pd.DataFrame, kind: str = "csv", **options) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        frame.to_csv(path / "data.csv", **{"index": False, **options})
    else:
        frame.to_parquet(path / "data.parquet", **{"index": False, **options})
    return path


def trained(run_train: Run, opt: Path) -> tuple[TrainResult, dict]:
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    return result, json.loads((opt / "model" / "model-meta.json").read_text())


def assert_failed(result: TrainResult, *fragments: str) -> str:
    assert result.exit_code == 1 and result.failure, result.stderr[-2000:]
    reason = result.failure
    assert reason.count("\n") == 1 and "Traceback" not in reason, reason
    for fragment in fragments:
        assert fragment in reason, reason
    assert result.model_files == []
    return reason


def metrics_of(stdout: str) -> dict[str, float]:
    return {f"{c}:{n}": float(v) for c, n, v in re.findall(METRIC_RE, stdout, flags=re.MULTILINE)}


# -- text labels and text features ----------------------------------------------------------------------------
def test_text_labels_train_a_classifier(tmp_path: Path, run_train: Run) -> None:
    source = folder(tmp_path / "iris", tables.iris())
    result, meta = trained(run_train, make_opt_ml(tmp_path / "ml", {"target": "species"}, {"train": source}))
    assert meta["task"] == "classification" and meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert "task: classification (inferred: the target holds text labels); 3 classes: setosa" in result.stderr
    assert metrics_of(result.stdout)["train:accuracy"] > 0.8


def test_text_labels_cannot_be_regression(tmp_path: Path, run_train: Run) -> None:
    source = folder(tmp_path / "iris", tables.iris())
    opt = make_opt_ml(tmp_path / "ml", {"target": "species", "problem_type": "regression"}, {"train": source})
    assert_failed(run_train(opt), "The target column 'species' holds text (e.g. 'setosa')")


def test_text_columns_are_categorical_features(tmp_path: Path, run_train: Run) -> None:
    source = folder(tmp_path / "titanic", tables.titanic())
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["categories"]["sex"] == ["female", "male"]
    assert meta["categories"]["embarked"] == ["C", "Q", "S"]  # sorted; the empty cells are missing values
    assert len(meta["categories"]["name"]) == 891  # quoted names with commas are one cell each
    assert "age" not in meta["categories"] and "alone" not in meta["categories"]
    assert meta["feature_names"] == ["pclass", "name", "sex", "age", "sibsp", "fare", "embarked", "alone"]


def test_booleans_in_csv_train_like_the_same_column_in_parquet(tmp_path: Path, run_train: Run) -> None:
    frame = tables.titanic()
    from_csv, csv_meta = trained(
        run_train, make_opt_ml(tmp_path / "csv", channels={"train": folder(tmp_path / "c", frame)})
    )
    from_parquet, parquet_meta = trained(
        run_train, make_opt_ml(tmp_path / "pq", channels={"train": folder(tmp_path / "p", frame, "parquet")})
    )
    assert "True" in (tmp_path / "c" / "data.csv").read_text()  # pandas writes booleans as True/False
    assert metrics_of(from_csv.stdout) == metrics_of(from_parquet.stdout)
    assert csv_meta["categories"] == parquet_meta["categories"]


def test_unseen_categories_in_validation_are_missing_values(tmp_path: Path, run_train: Run) -> None:
    frame = tables.titanic()
    validation = frame.iloc[:100].copy()
    validation.loc[validation.index[:7], "embarked"] = "X"  # a port the training data never saw
    opt = make_opt_ml(
        tmp_path / "ml",
        channels={
            "train": folder(tmp_path / "t", frame.iloc[100:]),
            "validation": folder(tmp_path / "v", validation),
        },
    )
    result, meta = trained(run_train, opt)
    assert meta["categories"]["embarked"] == ["C", "Q", "S"]
    assert "'embarked' has 7 value(s) the training data does not have (e.g. 'X')" in result.stderr
    assert "validation:accuracy" in metrics_of(result.stdout)


def test_text_label_missing_from_train(tmp_path: Path, run_train: Run) -> None:
    frame = tables.iris()
    validation = frame.iloc[:10].copy()
    validation.loc[validation.index[0], "species"] = "daisy"
    opt = make_opt_ml(
        tmp_path / "ml",
        {"target": "species"},
        {"train": folder(tmp_path / "t", frame), "validation": folder(tmp_path / "v", validation)},
    )
    assert_failed(run_train(opt), "1 target value(s) that never occur in the training data ('daisy')")


# -- serving maps the same categories ---------------------------------------------------------------------------
def trained_app(work: Path, frame: pd.DataFrame, hyperparameters: dict | None = None):
    """The inference app on a model trained in-process on `frame`."""
    import os

    from sagemaker_contract import training
    from sagemaker_contract.serving import create_app

    opt = make_opt_ml(work / "ml", hyperparameters or {}, {"train": folder(work / "t", frame)})
    previous = os.environ.get("OPT_ML_DIR")
    os.environ["OPT_ML_DIR"] = str(opt)
    try:
        assert training.main() == 0, (opt / "output" / "failure").read_text()
    finally:
        if previous is None:
            os.environ.pop("OPT_ML_DIR")
        else:
            os.environ["OPT_ML_DIR"] = previous
    return create_app(opt / "model")


@pytest.fixture(scope="module")
def titanic_app(tmp_path_factory: pytest.TempPathFactory):
    return trained_app(tmp_path_factory.mktemp("titanic"), tables.titanic())


def predict_csv(app, body: str) -> list[float]:
    status, _, answer = call(app, "POST", "/invocations", body.encode(), {"Content-Type": "text/csv"})
    assert status == 200, answer
    return [float(v) for v in answer.split()]


def test_serving_maps_text_cells_to_the_training_categories(titanic_app) -> None:
    female, male = predict_csv(
        titanic_app,
        '1,"Allen, Miss. E",female,29,0,211.3,S,True\n1,"Allen, Mr. E",male,29,0,211.3,S,True',
    )
    assert female != male  # sex is a feature the model sees
    # An unseen category and an empty cell are both missing values, not errors.
    unseen, missing = predict_csv(
        titanic_app, "3,Nobody,female,40,1,7.5,Atlantis,False\n3,Nobody,female,40,1,7.5,,False"
    )
    assert unseen == missing


def test_serving_json_rows_may_hold_text_and_be_records(titanic_app) -> None:
    row = [1, "Allen, Miss. E", "female", 29, 0, 211.3, "S", True]
    names = ["pclass", "name", "sex", "age", "sibsp", "fare", "embarked", "alone"]
    by_position = call(
        titanic_app, "POST", "/invocations", json.dumps({"instances": [row]}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    by_name = call(
        titanic_app, "POST", "/invocations", json.dumps({"instances": [dict(zip(names, row, strict=True))]}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert by_position[0] == 200 and by_name[0] == 200, (by_position, by_name)
    assert json.loads(by_position[2]) == json.loads(by_name[2])
    assert json.loads(by_position[2])["predictions"][0] == pytest.approx(
        predict_csv(titanic_app, '1,"Allen, Miss. E",female,29,0,211.3,S,True')[0], rel=1e-6
    )


def test_serving_parquet_with_text_and_boolean_columns(titanic_app) -> None:
    import io

    frame = tables.titanic().drop(columns="survived").iloc[:5]
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    status, _, body = call(
        titanic_app, "POST", "/invocations", sink.getvalue(),
        {"Content-Type": "application/x-parquet", "Accept": "text/csv"},
    )  # fmt: skip
    assert status == 200, body
    expected = predict_csv(titanic_app, frame.to_csv(index=False, header=False))
    np.testing.assert_allclose([float(v) for v in body.split()], expected, rtol=1e-6)


# -- header detection ------------------------------------------------------------------------------------------
def test_a_header_of_numbers_as_pandas_writes_it(tmp_path: Path, run_train: Run) -> None:
    x, y = tables.digits()
    frame = pd.DataFrame(x)
    frame.insert(0, "label", y)  # label,0,1,...,63
    source = folder(tmp_path / "digits", frame)
    assert (source / "data.csv").read_text().startswith("label,0,1,2,")
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["target"] == "label" and meta["feature_names"] == [str(i) for i in range(64)]
    assert meta["task"] == "classification" and meta["classes"] == list(range(10))
    assert meta["rows"]["train"] == 400  # the header is not a data row


def test_a_header_of_column_numbers_only(tmp_path: Path, run_train: Run) -> None:
    x, y = tables.digits()
    source = folder(tmp_path / "digits", pd.DataFrame(np.column_stack([y, x])))  # 0,1,...,64
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["target"] == "0" and meta["rows"]["train"] == 400


def test_a_utf8_byte_order_mark_before_the_header(tmp_path: Path, run_train: Run) -> None:
    source = folder(tmp_path / "iris", tables.iris(), encoding="utf-8-sig")
    assert (source / "data.csv").read_bytes().startswith(b"\xef\xbb\xbfsepal")
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", {"target": "species"}, {"train": source}))
    assert meta["feature_names"][0] == "sepal length (cm)"


def test_a_utf8_byte_order_mark_before_headerless_numbers(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "bom"
    source.mkdir()
    frame = tables.housing()[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]]
    frame.to_csv(source / "data.csv", index=False, header=False, encoding="utf-8-sig")
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["target"] == "c0" and meta["rows"]["train"] == 1000


# -- an index column is not the target -----------------------------------------------------------------------------
def test_pandas_index_column_without_a_target_fails_with_advice(tmp_path: Path, run_train: Run) -> None:
    source = folder(tmp_path / "h", tables.housing(), index=True)  # ",MedInc,...": the index, unnamed
    assert (source / "data.csv").read_text().startswith(",MedInc")
    reason = assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "has no name", "index=False"
    )
    assert "set the target hyperparameter" in reason.lower()


def test_pandas_index_column_is_dropped_when_the_target_is_named(tmp_path: Path, run_train: Run) -> None:
    frame = tables.housing()
    opt = make_opt_ml(
        tmp_path / "ml",
        {"target": "MedHouseVal"},
        {
            "train": folder(tmp_path / "t", frame.iloc[:800], index=True),
            "validation": folder(tmp_path / "v", frame.iloc[800:], index=True),
        },
    )
    result, meta = trained(run_train, opt)
    assert meta["feature_names"] == ["MedInc", "AveRooms", "HouseAge"]
    assert "the unnamed first column" in result.stderr


@pytest.mark.parametrize("shape", ["headerless", "named index"])
def test_a_first_column_counting_rows_is_not_a_target(tmp_path: Path, run_train: Run, shape: str) -> None:
    frame = tables.housing()
    source = tmp_path / "h"
    source.mkdir()
    if shape == "headerless":
        frame.to_csv(source / "data.csv", header=False)  # the index, then the columns, no header
    else:
        frame.reset_index().to_csv(source / "data.csv", index=False)  # "index" 0, 1, 2, ...
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})),
        "counts 0, 1, 2, ... like a row index",
        "index=False",
    )


def test_the_index_pandas_stores_in_parquet_is_not_a_feature(tmp_path: Path, run_train: Run) -> None:
    frame = tables.housing()[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]].sample(
        frac=1.0, random_state=0
    )
    source = folder(tmp_path / "p", frame, "parquet", index=None)  # a shuffled index: __index_level_0__
    import pyarrow.parquet as pq

    assert "__index_level_0__" in pq.ParquetFile(source / "data.parquet").schema_arrow.names
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["target"] == "MedHouseVal" and meta["feature_names"] == ["MedInc", "AveRooms", "HouseAge"]


# -- compressed and binary files -----------------------------------------------------------------------------------
def test_csv_gz_files_train(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "gz"
    source.mkdir()
    frame = tables.housing()[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]]
    frame.iloc[:500].to_csv(source / "part-0.csv.gz", index=False, compression="gzip")
    frame.iloc[500:].to_csv(source / "part-1.csv.gz", index=False, compression="gzip")
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["rows"]["train"] == 1000 and meta["target"] == "MedHouseVal"


@pytest.mark.parametrize(
    ("compression", "fragment"),
    [
        ("gzip", "is gzip-compressed but its name does not end in .gz"),
        ("bz2", "is compressed (bzip2)"),
        ("zip", "is compressed (zip)"),
    ],
)
def test_compressed_bytes_under_a_csv_name(
    tmp_path: Path, run_train: Run, compression: str, fragment: str
) -> None:
    source = tmp_path / "c"
    source.mkdir()
    tables.housing().to_csv(source / "data.csv", index=False, compression=compression)
    reason = assert_failed(run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), fragment)
    assert "data.csv" in reason and "columns" not in reason


def test_a_gz_name_on_plain_text(tmp_path: Path, run_train: Run) -> None:
    source = folder(tmp_path / "t", tables.housing())
    (source / "data.csv").rename(source / "data.csv.gz")
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})),
        "data.csv.gz",
        "is not gzip-compressed",
    )


def test_binary_content_under_a_csv_name(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "b"
    source.mkdir()
    (source / "data.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "data.csv", "not a text CSV file"
    )


# -- non-finite values -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("MedInc", "inf", "Column 'MedInc' of file data.csv in the 'train' channel has an infinite value"),
        (
            "AveRooms",
            "-inf",
            "Column 'AveRooms' of file data.csv in the 'train' channel has an infinite value",
        ),
        (
            "HouseAge",
            "1e39",
            "Column 'HouseAge' of file data.csv in the 'train' channel has an infinite value",
        ),
        (
            "MedHouseVal",
            "inf",
            "The target column 'MedHouseVal' of file data.csv in the 'train' channel has an",
        ),
    ],
)
def test_infinite_values_fail_with_one_sentence(
    tmp_path: Path, run_train: Run, column: str, value: str, fragment: str
) -> None:
    frame = tables.housing()[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]].astype(object)
    frame.loc[41, column] = value
    source = folder(tmp_path / "t", frame)
    reason = assert_failed(run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), fragment)
    assert "data row 42" in reason and len(reason) < 400


def test_infinite_values_in_parquet(tmp_path: Path, run_train: Run) -> None:
    frame = tables.housing()[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]]
    frame.loc[7, "MedInc"] = np.inf
    source = folder(tmp_path / "p", frame, "parquet")
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})), "'MedInc'", "data row 8"
    )


# -- wide rows and memory -----------------------------------------------------------------------------------------
def wide_csv(path: Path, rows: int, columns: int, header: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = [",".join(f"f{j}" for j in range(columns))] if header else []
    for i in range(rows):
        values = rng.integers(0, 10, columns).astype(str)
        values[0] = str(i % 2)
        values[5] = ""  # a missing value
        lines.append(",".join(values))
    (path / "wide.csv").write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header", [False, True])
def test_rows_of_any_width_parse(tmp_path: Path, header: bool) -> None:
    import time

    from sagemaker_contract import data

    source = wide_csv(tmp_path / "w", rows=4, columns=1_100_000 // 2, header=header)
    assert (source / "wide.csv").stat().st_size > 4 * 1_000_000  # rows over 1 MB, pyarrow's block size
    started = time.perf_counter()
    layout = data.inspect_channel(source, "train")
    columns = data.plan_columns(layout, None)
    dataset, _ = data.read_channel(layout, columns)
    assert dataset.x.shape == (4, 549_999) and dataset.x.dtype == np.float32
    assert np.isnan(dataset.x[:, 4]).all() and list(dataset.y) == [0, 1, 0, 1]
    assert time.perf_counter() - started < 30


def test_a_row_longer_than_the_read_block(tmp_path: Path) -> None:
    """A 2.2 MB row of few columns (a long text cell): pyarrow's 1 MB blocks cannot hold it."""
    from sagemaker_contract import data

    source = tmp_path / "long"
    source.mkdir()
    rows = ["y,text,x"] + [f"{i % 2},{'word ' * 440_000 if i == 1 else 'short'},{i}" for i in range(30)]
    (source / "long.csv").write_text("\n".join(rows) + "\n")
    layout = data.inspect_channel(source, "train")
    dataset, _ = data.read_channel(layout, data.plan_columns(layout, None))
    assert dataset.x.shape == (30, 2) and len(dataset.categories["text"]) == 2


def test_a_bad_cell_in_a_wide_row_is_named(tmp_path: Path, run_train: Run) -> None:
    source = wide_csv(tmp_path / "w", rows=40, columns=5000, header=True)  # 1 word in 40: a bad cell
    lines = (source / "wide.csv").read_text().splitlines()
    cells = lines[2].split(",")  # data row 2
    cells[1234] = "oops"
    lines[2] = ",".join(cells)
    (source / "wide.csv").write_text("\n".join(lines) + "\n")
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})),
        "Column 'f1234' of file wide.csv in the 'train' channel has a non-numeric value 'oops' on data row 2",
    )


def test_data_that_does_not_fit_in_memory_fails_before_reading(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker_contract import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000)
    result = run_train(make_opt_ml(tmp_path / "ml"))
    reason = assert_failed(result, "Training needs an estimated", "of memory", "available")
    assert "2,500 rows x 8 features" in reason  # train and validation, as counted before reading
    assert "read " not in result.stderr  # nothing was read


# -- answers with labels ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iris_app(tmp_path_factory: pytest.TempPathFactory):
    return trained_app(tmp_path_factory.mktemp("iris"), tables.iris(), {"target": "species"})


@pytest.fixture(scope="module")
def housing_app(tmp_path_factory: pytest.TempPathFactory):
    return trained_app(tmp_path_factory.mktemp("housing"), tables.housing(), {"target": "MedHouseVal"})


IRIS_ROWS = b"5.0,3.4,1.5,0.2\n6.6,3.0,5.6,2.0"


def ask(app, accept: str, body: bytes = IRIS_ROWS, content_type: str = "text/csv"):
    return call(app, "POST", "/invocations", body, {"Content-Type": content_type, "Accept": accept})


def test_json_labels(iris_app) -> None:
    status, headers, body = ask(iris_app, "application/json; output=labels")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"predictions": ["setosa", "virginica"]}


def test_json_labels_with_probabilities(iris_app) -> None:
    status, _, body = ask(iris_app, "application/json; output=probabilities")
    assert status == 200, body
    answers = json.loads(body)["predictions"]
    assert [a["label"] for a in answers] == ["setosa", "virginica"]
    for answer in answers:
        assert list(answer["probabilities"]) == ["setosa", "versicolor", "virginica"]
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert max(answer["probabilities"], key=answer["probabilities"].get) == answer["label"]
    default = json.loads(ask(iris_app, "application/json")[2])["predictions"]
    np.testing.assert_allclose([list(a["probabilities"].values()) for a in answers], default, rtol=1e-6)


def test_csv_labels_for_every_request_type(iris_app) -> None:
    assert ask(iris_app, "text/csv; output=labels")[2] == b"setosa\nvirginica\n"
    as_json = json.dumps({"instances": [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]}).encode()
    assert ask(iris_app, "text/csv;output=labels", as_json, "application/json")[2] == b"setosa\nvirginica\n"


@pytest.mark.parametrize(
    ("accept", "status", "fragment"),
    [
        ("text/csv; output=probabilities", 406, b"output=probabilities is answered in JSON"),
        ("application/json; output=everything", 406, b"output must be labels or probabilities"),
    ],
)
def test_output_options_that_cannot_be_met(iris_app, accept: str, status: int, fragment: bytes) -> None:
    got, _, body = ask(iris_app, accept)
    assert got == status and fragment in body, body


def test_labels_need_a_classifier(housing_app) -> None:
    status, _, body = call(
        housing_app, "POST", "/invocations", b"8.3,6.98,41",
        {"Content-Type": "text/csv", "Accept": "application/json; output=labels"},
    )  # fmt: skip
    assert status == 400 and b"labels need a classification model" in body


def test_binary_labels_are_the_training_labels(titanic_app) -> None:
    status, _, body = call(
        titanic_app, "POST", "/invocations", b"1,Allen,female,29,0,211.3,S,True\n3,Bob,male,40,0,7.5,S,True",
        {"Content-Type": "text/csv", "Accept": "application/json; output=probabilities"},
    )  # fmt: skip
    assert status == 200, body
    answers = json.loads(body)["predictions"]
    assert all(set(a["probabilities"]) == {"0", "1"} and a["label"] in (0, 1) for a in answers)


def test_json_keeps_small_probabilities() -> None:
    from sagemaker_contract.serving import format_json

    predictions = np.array([[1e-9, 0.25, 1 - 1e-9 - 0.25], [3.5e-12, 1.0, 0.0]], dtype=np.float32)
    values = json.loads(format_json(predictions))["predictions"]
    assert values[0][0] == pytest.approx(1e-9, rel=1e-6) and values[1][0] == pytest.approx(3.5e-12, rel=1e-6)
    assert values[0][1] == 0.25 and values[1][2] == 0.0


# -- task inference, visible and overridable --------------------------------------------------------------------
def coded(path: Path, values: np.ndarray) -> Path:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"code": values, "a": rng.normal(size=values.size), "b": values + rng.normal(size=values.size)}
    )
    return folder(path, frame)


def test_codes_10_20_30_are_numbers_unless_told(tmp_path: Path, run_train: Run) -> None:
    source = coded(tmp_path / "c", np.tile([10, 20, 30], 100))
    result, meta = trained(run_train, make_opt_ml(tmp_path / "a", channels={"train": source}))
    assert meta["task"] == "regression" and meta["task_source"] == "target"
    assert "3 distinct whole numbers (10, 20, 30), not class codes 0..k-1" in result.stderr
    assert "Set problem_type=classification if 'code' is meant otherwise" in result.stderr
    summary = json.loads(
        next(line for line in result.stdout.splitlines() if line.startswith("MODEL-META "))[11:]
    )
    assert summary["task"] == "regression" and summary["task_reason"] == meta["task_reason"]

    opt = make_opt_ml(tmp_path / "b", {"problem_type": "classification"}, {"train": source})
    result, meta = trained(run_train, opt)
    assert meta["task"] == "classification" and meta["classes"] == [10, 20, 30]
    assert meta["task_source"] == "problem_type"
    assert (
        "task: classification (set by problem_type: problem_type=classification); 3 classes: 10, 20, 30"
        in result.stderr
    )


def test_a_score_from_1_to_9_is_a_number(tmp_path: Path, run_train: Run) -> None:
    source = coded(tmp_path / "s", np.tile(np.arange(1, 10), 40))
    _, meta = trained(run_train, make_opt_ml(tmp_path / "ml", channels={"train": source}))
    assert meta["task"] == "regression" and "9 distinct whole numbers" in meta["task_reason"]


# -- big files are parsed on every core -----------------------------------------------------------------------------
def read(source: Path) -> tuple:
    from sagemaker_contract import data

    layout = data.inspect_channel(source, "train")
    dataset, _ = data.read_channel(layout, data.plan_columns(layout, None))
    return layout, dataset


@pytest.mark.parametrize("header", [True, False])
def test_parallel_ranges_read_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: bool
) -> None:
    from sagemaker_contract import sources

    frame = tables.titanic(rows=3000)[["survived", "pclass", "age", "sibsp", "fare", "alone"]]
    text = frame.to_csv(index=False, header=header)
    lines = text.splitlines()
    lines[700:700] = ["", ""]  # blank lines: lines but not rows
    source = tmp_path / "d"
    source.mkdir()
    (source / "d.csv").write_text("\n".join(lines))  # no newline at the end
    monkeypatch.setattr(sources, "PARALLEL_MIN_BYTES", 10**12)
    sequential_layout, sequential = read(source)
    monkeypatch.setattr(sources, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(sources.os, "cpu_count", lambda: 5)
    parallel_layout, parallel = read(source)
    assert not sequential_layout.sources[0].ranges and len(parallel_layout.sources[0].ranges) == 5
    assert parallel.x.shape == sequential.x.shape == (3000, 5)
    np.testing.assert_array_equal(parallel.x, sequential.x)
    np.testing.assert_array_equal(parallel.y, sequential.y)


def test_parallel_ranges_report_bad_values_by_file_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker_contract import sources
    from sagemaker_contract.errors import UserError

    frame = tables.housing(rows=5000)[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]].astype(object)
    frame.loc[4000, "AveRooms"] = "inf"
    source = folder(tmp_path / "d", frame)
    monkeypatch.setattr(sources, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(sources.os, "cpu_count", lambda: 4)
    with pytest.raises(UserError, match=r"Column 'AveRooms' .* infinite value .* on data row 4001"):
        read(source)


def test_a_typo_in_the_first_row_of_headerless_data_is_not_a_header(tmp_path: Path, run_train: Run) -> None:
    source = tmp_path / "typo"
    source.mkdir()
    frame = tables.housing()[["MedHouseVal", "MedInc", "AveRooms", "HouseAge"]].astype(object)
    frame.iloc[0, 2] = "lots"
    frame.to_csv(source / "data.csv", index=False, header=False)
    assert_failed(
        run_train(make_opt_ml(tmp_path / "ml", channels={"train": source})),
        "Column 'c2' of file data.csv in the 'train' channel has a non-numeric value 'lots' on data row 1",
    )
