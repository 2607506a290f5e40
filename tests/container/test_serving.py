"""The inference app in-process (WSGI calls), plus the real server on loopback (robustness: test_server.py)."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.container.conftest import ROOT, SAMPLE, make_opt_ml

VALIDATION_LINES = (SAMPLE / "validation" / "validation.csv").read_text().splitlines()
FEATURE_NAMES = VALIDATION_LINES[0].split(",")[1:]
ROWS = [line.split(",", 1)[1] for line in VALIDATION_LINES[1:]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sagemaker_contract import training

    opt = make_opt_ml(tmp_path_factory.mktemp("serve") / "ml", {"num_round": "30"})
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
    assert len(values) == 5 and all(0 < v < 6 for v in values)


def test_csv_matches_direct_predict(app, model_dir: Path) -> None:
    import user_model

    model = user_model.load(model_dir)
    features = np.array([[float(v) for v in row.split(",")] for row in ROWS[:50]], dtype=np.float32)
    expected = user_model.predict(model, features)
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
        # A quoted number is not a number to the CSV reader: a clear 400 naming it, not a 500.
        (
            b'"7.4",' + ROWS[0].encode().split(b",", 1)[1],
            {"Content-Type": "text/csv"},
            400,
            b"non-numeric value '\"7.4\"'",
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


def test_unknown_path_and_method(app) -> None:
    assert call(app, "GET", "/nope")[0] == 404
    assert call(app, "GET", "/invocations")[0] == 405
    assert call(app, "GET", "/execution-parameters")[0] == 200


# -- the real server on loopback (its robustness: test_server.py) ---------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(model_dir: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    port = _free_port()
    env = {
        **os.environ,
        "OPT_ML_DIR": str(model_dir.parent),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_HOST": "127.0.0.1",  # host-side tests never listen beyond loopback
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "PYTHONPATH": str(ROOT / "container"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_contract", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.terminate()
        pytest.fail(f"server did not start: {process.communicate(timeout=30)[1].decode()[-2000:]}")
    yield port, process
    if process.poll() is None:
        # SIGTERM, not SIGKILL: the master stops its workers (killing only the master once left them running).
        process.terminate()
        process.communicate(timeout=30)


def test_real_server_predicts_and_stops_on_sigterm(server: tuple[int, subprocess.Popen]) -> None:
    port, process = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/invocations", body="\n".join(ROWS[:3]), headers={"Content-Type": "text/csv"})
    response = connection.getresponse()
    assert response.status == 200 and len(response.read().split()) == 3
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10


def test_fast_predict_matches_inplace_predict(model_dir: Path, tmp_path: Path) -> None:
    import user_model
    import xgboost as xgb

    assert user_model._fast_predict is not None
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
    multi = user_model.Model(booster=booster, meta={"problem_type": "classification"})
    got = user_model.predict(multi, features[:7])
    assert got.shape == (7, 3)
    np.testing.assert_allclose(got, booster.inplace_predict(features[:7]), rtol=1e-6)


def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes (the requests say `Connection: close`: a kept-alive
    connection would only close at the server's idle timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_real_server_http_details(server: tuple[int, subprocess.Popen]) -> None:
    port, _ = server
    # Chunked upload, as some clients send it.
    body = "\n".join(ROWS[:2]).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = _raw(
        port,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/csv\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert answer.startswith(b"HTTP/1.1 200") and len(answer.split(b"\r\n\r\n", 1)[1].split()) == 2
    # Expect: 100-continue gets the interim answer, then the real one.
    answer = _raw(
        port,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/csv\r\n"
        b"Expect: 100-continue\r\n" + b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue") and b"HTTP/1.1 200" in answer
    # Over 6 MB: 413 with a reason; the server drains the upload so the client is not reset mid-upload.
    big = (ROWS[0] + "\n").encode() * (6 * 1024 * 1024 // len(ROWS[0]) + 10)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/invocations", body=big, headers={"Content-Type": "text/csv"})
    response = connection.getresponse()
    assert response.status == 413 and b"6 MB" in response.read()
    # HEAD /ping and a malformed request.
    assert _raw(port, b"HEAD /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )
    assert _raw(port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_csv_parser_choice_follows_the_measured_crossover(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow for narrow bodies past ~11 KiB, Python for wide ones up to ~40 KiB (serving.SMALL_CSV_BYTES)."""
    from sagemaker_contract import serving

    used: list[str] = []
    arrow = serving._parse_csv_arrow
    monkeypatch.setattr(serving, "_parse_csv_arrow", lambda body: used.append("arrow") or arrow(body))
    narrow = ("\n".join((ROWS * 10)[:260]) + "\n").encode()  # 8 columns, ~12.7 KB
    wide = ("\n".join([",".join(["1.2345"] * 100)] * 45) + "\n").encode()  # 100 columns, ~31 KB
    assert 12 * 1024 < len(narrow) < 16 * 1024 and 16 * 1024 < len(wide) < 40 * 1024
    serving.parse_csv(narrow)
    assert used == ["arrow"]
    assert serving.parse_csv(wide).shape == (45, 100)
    assert used == ["arrow"]  # the wide body stayed on the Python path
