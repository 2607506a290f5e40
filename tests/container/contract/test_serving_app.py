"""The inference WSGI app in-process, with the fake model: parsing, content types, errors, output formats."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.container.conftest import SAMPLE, make_opt_ml

VALIDATION_LINES = (SAMPLE / "validation" / "validation.csv").read_text().splitlines()
FEATURE_NAMES = VALIDATION_LINES[0].split(",")[1:]
ROWS = [line.split(",", 1)[1] for line in VALIDATION_LINES[1:]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sagemaker_contract import training

    opt = make_opt_ml(tmp_path_factory.mktemp("serve") / "ml")
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


@pytest.fixture(scope="module")
def app(model_dir: Path):
    from sagemaker_contract.serving import create_app

    return create_app(model_dir)


def call(app, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(
        REQUEST_METHOD=method,
        PATH_INFO=path,
        CONTENT_LENGTH=str(len(body)),
        **{"wsgi.input": io.BytesIO(body)},
    )
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    captured: dict = {}

    def start_response(status: str, response_headers: list) -> None:
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(response_headers)

    payload = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], payload


def test_ping_only_when_model_loaded(tmp_path: Path, model_dir: Path) -> None:
    import shutil

    from sagemaker_contract.serving import create_app

    empty = tmp_path / "model"
    empty.mkdir()
    app = create_app(empty)
    status, _, body = call(app, "GET", "/ping")
    assert status == 503 and b"no model" in body
    assert call(app, "POST", "/invocations", ROWS[0].encode(), {"Content-Type": "text/csv"})[0] == 503
    for path in model_dir.iterdir():  # the model arrives: the next ping loads it
        shutil.copy(path, empty / path.name)
    status, _, body = call(app, "GET", "/ping")
    assert status == 200 and body == b""


def test_csv_in_csv_out(app) -> None:
    status, headers, body = call(
        app, "POST", "/invocations", "\n".join(ROWS[:5]).encode(), {"Content-Type": "text/csv"}
    )
    assert status == 200 and headers["Content-Type"] == "text/csv"
    values = [float(v) for v in body.decode().split()]
    assert len(values) == 5 and all(-1 < v < 7 for v in values)  # house values in 100k


def test_csv_matches_direct_predict(app, model_dir: Path) -> None:
    from sagemaker_contract.interface import load_model_plugin

    plugin = load_model_plugin()
    model = plugin.load(model_dir)
    features = np.array([[float(v) for v in row.split(",")] for row in ROWS[:50]], dtype=np.float32)
    expected = plugin.predict(model, features)
    _, _, body = call(
        app, "POST", "/invocations", "\n".join(ROWS[:50]).encode(), {"Content-Type": "text/csv"}
    )
    np.testing.assert_allclose([float(v) for v in body.split()], expected, rtol=1e-5)


def test_large_csv_uses_arrow_path_and_agrees(app) -> None:
    body = ("\n".join(ROWS) + "\n").encode()  # > 16 KB: the pyarrow parser
    assert len(body) > 16 * 1024
    status, _, large = call(app, "POST", "/invocations", body, {"Content-Type": "text/csv"})
    _, _, small = call(
        app, "POST", "/invocations", "\n".join(ROWS[:10]).encode(), {"Content-Type": "text/csv"}
    )
    assert status == 200 and large.split()[:10] == small.split()


def test_csv_header_and_missing_values(app) -> None:
    payload = ",".join(FEATURE_NAMES) + "\n" + ROWS[0] + "\n" + ",".join([""] * len(FEATURE_NAMES))
    status, _, body = call(app, "POST", "/invocations", payload.encode(), {"Content-Type": "text/csv"})
    assert status == 200 and len(body.split()) == 2


def test_json_in_json_out(app) -> None:
    rows = [[float(v) for v in row.split(",")] for row in ROWS[:3]]
    for payload in ({"instances": rows}, rows, {"instances": [{"features": r} for r in rows]}):
        status, headers, body = call(
            app, "POST", "/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert len(json.loads(body)["predictions"]) == 3
    status, _, body = call(
        app, "POST", "/invocations", json.dumps(rows[0]).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200 and len(json.loads(body)["predictions"]) == 1


def test_parquet_by_name_and_accept(app) -> None:
    rows = np.array([[float(v) for v in row.split(",")] for row in ROWS[:4]])
    # Columns in another order plus an extra one: picked by name.
    columns = {name: rows[:, i] for i, name in reversed(list(enumerate(FEATURE_NAMES)))}
    columns["id"] = np.arange(4)
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    status, headers, body = call(
        app,
        "POST",
        "/invocations",
        sink.getvalue(),
        {"Content-Type": "application/x-parquet", "Accept": "text/csv"},
    )
    assert status == 200 and headers["Content-Type"] == "text/csv"
    _, _, csv_body = call(
        app, "POST", "/invocations", "\n".join(ROWS[:4]).encode(), {"Content-Type": "text/csv"}
    )
    assert body == csv_body


def test_accept_json_for_csv_request(app) -> None:
    status, headers, body = call(
        app,
        "POST",
        "/invocations",
        ROWS[0].encode(),
        {"Content-Type": "text/csv", "Accept": "application/json"},
    )
    assert (
        status == 200
        and headers["Content-Type"] == "application/json"
        and len(json.loads(body)["predictions"]) == 1
    )


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (b"1,2,3", {"Content-Type": "text/csv"}, 400, b"needs 8 feature values"),
        (b"0.5," + ROWS[0].encode(), {"Content-Type": "text/csv"}, 400, b"leave out the target"),
        (
            b"7.4,abc"
            + ROWS[0].encode()[ROWS[0].index(",", ROWS[0].index(",") + 1) :]
            + b"\n"
            + ROWS[1].encode(),
            {"Content-Type": "text/csv"},
            400,
            b"non-numeric",
        ),
        # A quoted word in a numeric column: a clear 400 naming it, not a 500.
        (
            b'"seven",' + ROWS[0].encode().split(b",", 1)[1],
            {"Content-Type": "text/csv"},
            400,
            b"non-numeric value 'seven'",
        ),
        (ROWS[0].encode() + b"\n1,2", {"Content-Type": "text/csv"}, 400, b"row 2 has 2 values"),
        (b"", {"Content-Type": "text/csv"}, 400, b"empty"),
        (b"{not json", {"Content-Type": "application/json"}, 400, b"not valid JSON"),
        (b'{"rows": []}', {"Content-Type": "application/json"}, 400, b"instances"),
        (b'[["a", "b"]]', {"Content-Type": "application/json"}, 400, b"numbers"),
        (b"PAR1garbage", {"Content-Type": "application/x-parquet"}, 400, b"Parquet"),
        (ROWS[0].encode(), {"Content-Type": "image/png"}, 415, b"Unsupported Content-Type"),
        (ROWS[0].encode(), {"Content-Type": "text/csv", "Accept": "image/png"}, 406, b"Accept"),
    ],
)
def test_bad_payloads_get_4xx(app, body: bytes, headers: dict, status: int, fragment: bytes) -> None:
    got, _, payload = call(app, "POST", "/invocations", body, headers)
    assert got == status, payload
    assert fragment.lower() in payload.lower() and b"Traceback" not in payload


def test_over_6_mb_is_413(app) -> None:
    body = (ROWS[0] + "\n").encode() * (6 * 1024 * 1024 // len(ROWS[0]) + 10)
    status, _, payload = call(app, "POST", "/invocations", body, {"Content-Type": "text/csv"})
    assert status == 413 and b"6 MB" in payload


def test_quoted_cells_read_like_training_reads_them(app) -> None:
    """CSV quoting is syntax: "7.4" is the number 7.4, as pyarrow reads it in training (pandas QUOTE_ALL)."""
    quoted = ",".join(f'"{cell}"' for cell in ROWS[0].split(","))
    plain = call(app, "POST", "/invocations", ROWS[0].encode(), {"Content-Type": "text/csv"})
    status, _, body = call(app, "POST", "/invocations", quoted.encode(), {"Content-Type": "text/csv"})
    assert status == 200 and body == plain[2], body


def test_unknown_path_and_method(app) -> None:
    assert call(app, "GET", "/nope")[0] == 404
    assert call(app, "GET", "/invocations")[0] == 405
    assert call(app, "GET", "/execution-parameters")[0] == 200


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_model_answering_another_number_of_rows_is_a_500(
    app, monkeypatch: pytest.MonkeyPatch, extra
) -> None:
    """The server shares predict calls between requests and splits the answer by rows: a model that does not
    answer one prediction per row must fail the request, not shift other requests' answers."""
    monkeypatch.setattr(app.plugin, "predict", lambda model, features: np.zeros(len(features) + extra))
    status, _, body = call(
        app, "POST", "/invocations", "\n".join(ROWS[:3]).encode(), {"Content-Type": "text/csv"}
    )
    assert status == 500 and b"Internal error" in body
