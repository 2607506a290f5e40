"""The real model server (granian) on loopback, with the default model (its robustness: test_server.py)."""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


def test_concurrent_requests_each_get_their_own_rows_predictions(
    server: tuple[int, subprocess.Popen], model_dir: Path
) -> None:
    """Requests in flight together share predict calls in the server (sagemaker_contract/batching.py): each
    answer must still be exactly what its own rows get alone, in its own format."""
    from concurrent.futures import ThreadPoolExecutor
    from wsgiref.util import setup_testing_defaults

    from sagemaker_contract.serving import create_app

    port, _ = server
    alone = create_app(model_dir)  # the WSGI app in-process: every request predicted on its own

    def expected(body: bytes, accept: str) -> bytes:
        environ: dict = {}
        setup_testing_defaults(environ)
        environ.update(REQUEST_METHOD="POST", PATH_INFO="/invocations", CONTENT_TYPE="text/csv",
                       CONTENT_LENGTH=str(len(body)), HTTP_ACCEPT=accept, **{"wsgi.input": io.BytesIO(body)})  # fmt: skip
        return b"".join(alone(environ, lambda status, headers: None))

    rng = np.random.default_rng(3)
    requests = []
    for _ in range(16 * 25):
        start, rows = int(rng.integers(0, len(ROWS) - 3)), int(rng.integers(1, 4))
        body = "\n".join(ROWS[start : start + rows]).encode()
        accept = "application/json" if rng.random() < 0.5 else "text/csv"
        requests.append((body, accept, expected(body, accept)))

    def client(share: list[tuple[bytes, str, bytes]]) -> list[tuple[bytes, bytes]]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive
        answers = []
        for body, accept, want in share:
            connection.request("POST", "/invocations", body=body,
                               headers={"Content-Type": "text/csv", "Accept": accept})  # fmt: skip
            response = connection.getresponse()
            answers.append(
                (response.read() if response.status == 200 else b"status %d" % response.status, want)
            )
        connection.close()
        return answers

    with ThreadPoolExecutor(16) as pool:
        results = [
            answer for share in pool.map(client, [requests[i::16] for i in range(16)]) for answer in share
        ]
    wrong = [(got, want) for got, want in results if got != want]
    assert not wrong, f"{len(wrong)} of {len(results)} answers differ, e.g. {wrong[0]}"


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
    """pyarrow for narrow bodies past ~6 KiB, Python for wide ones up to ~30 KiB (serving.SMALL_CSV_BYTES);
    both give the same matrix."""
    from sagemaker_contract import serving

    used: list[str] = []
    arrow = serving._parse_csv_arrow
    monkeypatch.setattr(serving, "_parse_csv_arrow", lambda body: used.append("arrow") or arrow(body))
    narrow = ("\n".join((ROWS * 10)[:150]) + "\n").encode()  # 8 columns, ~7 KB
    wide = ("\n".join([",".join(["1.2345"] * 100)] * 40) + "\n").encode()  # 100 columns, ~28 KB
    assert 6.5 * 1024 < len(narrow) < 8 * 1024 and 16 * 1024 < len(wide) < 30 * 1024
    parsed = serving.parse_csv(narrow)
    assert used == ["arrow"]
    rows = [line.split(",") for line in narrow.decode().splitlines()]
    np.testing.assert_array_equal(parsed, np.array(rows, dtype=np.float32))
    assert serving.parse_csv(wide).shape == (40, 100)
    assert used == ["arrow"]  # the wide body stayed on the Python path
