"""The real model servers (pre-fork and gunicorn) on loopback, with the default model."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(params=["prefork", "gunicorn"])
def server(model_dir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, subprocess.Popen]]:
    port = _free_port()
    env = {
        **os.environ,
        "SAGEMAKER_MODEL_SERVER": request.param,
        "OPT_ML_DIR": str(model_dir.parent),
        "SAGEMAKER_BIND_TO_PORT": str(port),
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
        process.kill()
        pytest.fail(f"server did not start: {process.stderr.read().decode()[-2000:]}")
    yield port, process
    if process.poll() is None:
        process.kill()
        process.wait()


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


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_real_server_http_details(
    server: tuple[int, subprocess.Popen], request: pytest.FixtureRequest
) -> None:
    port, _ = server
    prefork = request.node.callspec.params["server"] == "prefork"
    # Chunked upload, as some clients send it.
    body = "\n".join(ROWS[:2]).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = _raw(
        port,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked,
    )
    assert answer.startswith(b"HTTP/1.1 200") and len(answer.split(b"\r\n\r\n", 1)[1].split()) == 2
    # Expect: 100-continue gets the interim answer, then the real one.
    answer = _raw(
        port,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nExpect: 100-continue\r\n"
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue") and b"HTTP/1.1 200" in answer
    # Over 6 MB: 413 with a reason; the default server drains the upload so the client is not reset
    # mid-upload (gunicorn resets it: one reason it is not the default).
    big = (ROWS[0] + "\n").encode() * (6 * 1024 * 1024 // len(ROWS[0]) + 10)
    if prefork:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/invocations", body=big, headers={"Content-Type": "text/csv"})
        response = connection.getresponse()
        assert response.status == 413 and b"6 MB" in response.read()
    # HEAD /ping and a malformed request.
    assert _raw(port, b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert _raw(port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
