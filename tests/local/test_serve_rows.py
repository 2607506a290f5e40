"""Smoke-serve picks its rows with the container's reader: validation else train, any supported format,
the target dropped by name, JSON records when the columns have names; unreadable data is a reason, not a
failure."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlpipe.local.stages.serve import feature_rows, pick_rows, predictions_of

NAMED = "age,species,sex,ok\n22,setosa,male,True\n35,virginica,female,False\n41,setosa,female,True\n"


def records(body: bytes) -> list[dict]:
    return json.loads(body)["instances"]


def write(folder: Path, name: str, body: bytes | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return path


def test_a_named_target_is_dropped_by_name_and_rows_go_as_json_records(tmp_path: Path) -> None:
    write(tmp_path / "validation", "v.csv", NAMED)
    request = feature_rows(tmp_path / "validation", "validation", "species")
    assert request.content_type == "application/json" and request.channel == "validation"
    assert records(request.body)[0] == {"age": 22.0, "sex": "male", "ok": True}
    assert len(records(request.body)) == 3


def test_without_a_target_the_first_column_is_the_target_as_in_training(tmp_path: Path) -> None:
    write(tmp_path / "validation", "v.csv", NAMED)
    assert set(records(feature_rows(tmp_path / "validation", "validation", None).body)[0]) == {
        "species",
        "sex",
        "ok",
    }


def test_headerless_rows_go_as_csv_without_the_first_column(tmp_path: Path) -> None:
    write(tmp_path / "train", "t.csv", "1.5,2,3\n2.5,4,5\n")
    request = feature_rows(tmp_path / "train", "train", None)
    assert request.content_type == "text/csv"
    assert request.body.decode().splitlines() == ["2.0,3.0", "4.0,5.0"]


@pytest.mark.parametrize("form", ["gzip", "bom", "numeric-header", "parquet", "pandas-index"])
def test_every_supported_file_form_gives_rows(tmp_path: Path, form: str) -> None:
    folder = tmp_path / "validation"
    target = "species"
    if form == "gzip":
        write(folder, "v.csv.gz", gzip.compress(NAMED.encode()))
    elif form == "bom":
        write(folder, "v.csv", "\ufeff" + NAMED)
    elif form == "numeric-header":
        write(folder, "v.csv", "label,0,1\n1,0.5,0.25\n0,0.75,0.5\n")
        target = "label"
    elif form == "parquet":
        folder.mkdir(parents=True)
        table = pa.table({"age": [22, 35], "species": ["setosa", "virginica"], "sex": ["male", "female"]})
        pq.write_table(table, folder / "v.parquet")
    else:
        write(folder, "v.csv", ",age,species\n0,22,setosa\n1,35,virginica\n")
    rows = records(feature_rows(folder, "validation", target).body)
    assert rows and target not in rows[0] and "" not in rows[0]


def test_validation_first_else_train(tmp_path: Path) -> None:
    write(tmp_path / "train", "_SUCCESS", b"")  # a marker file is skipped, as in training
    write(tmp_path / "train", "t.csv", "y,x\n1,2\n")
    request, reasons = pick_rows(tmp_path, None)
    assert request is not None and request.channel == "train" and reasons == ["no validation/ folder"]
    write(tmp_path / "validation", "v.csv", "y,x\n3,4\n")
    request, _ = pick_rows(tmp_path, None)
    assert request is not None and request.channel == "validation"


def test_data_that_cannot_be_read_is_a_reason_not_an_error(tmp_path: Path) -> None:
    write(tmp_path / "validation", "v.csv", gzip.compress(b"y,x\n1,2\n"))  # gzip under a .csv name
    write(tmp_path / "train", "t.csv", "y\n1\n")  # a single column
    request, reasons = pick_rows(tmp_path, None)
    assert request is None
    assert reasons[0].startswith("validation: ") and "gzip" in reasons[0]
    assert reasons[1].startswith("train: ") and "single column" in reasons[1]


def test_predictions_are_read_from_json_or_csv_answers() -> None:
    assert predictions_of(b'{"predictions": [0.5, "setosa"]}', "application/json") == ["0.5", "setosa"]
    assert predictions_of(b"1.5\n2.5\n", "text/csv") == ["1.5", "2.5"]
