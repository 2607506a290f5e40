"""Batch transform splits the input into requests and its output equals /invocations for the same rows;
LocalServing runs one model server per config that has traffic and stops it when none is routed to it."""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlpipe.local.serving import LocalServing
from mlpipe.local.transform import TransformFailed, mini_batches, transform
from tests.local.test_local_api import Model


def invocations(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
    answer = connection.getresponse().read()
    connection.close()
    return answer


def test_transform_output_equals_invocations_for_the_same_rows() -> None:
    model = Model()
    try:
        rows = b"".join(f"{i},{i * 0.5}\n".encode() for i in range(2000))
        result = transform(model.url, rows, max_payload_mb=0.004, concurrency=4)  # ~4 KB requests
        assert result.rows == 2000 and result.requests > 1
        assert result.output == invocations(model.url, rows)
        assert model.requests == result.requests + 1
    finally:
        model.close()


def test_mini_batches_respect_the_payload_limit_and_keep_order() -> None:
    lines = [f"{i}".encode() * 3 for i in range(100)]
    batches = list(mini_batches(lines, 64))
    assert [line for batch in batches for line in batch] == lines
    assert all(sum(len(line) + 1 for line in batch) <= 64 for batch in batches)
    with pytest.raises(TransformFailed, match="larger than MaxPayloadInMB"):
        list(mini_batches([b"x" * 100], 64))


def test_a_failing_model_fails_the_transform() -> None:
    model = Model(bad=True)
    try:
        with pytest.raises(TransformFailed, match="answered 500"):
            transform(model.url, b"1,2\n-1,2\n")
    finally:
        model.close()


def test_local_serving_starts_a_server_per_config_with_traffic_and_stops_it_after(tmp_path: Path) -> None:
    started: list[str] = []
    stopped: list[str] = []

    @contextlib.contextmanager
    def start(image: str, model_dir: Path) -> Iterator[str]:
        started.append(model_dir.parent.name)
        yield f"http://{model_dir.parent.name}"
        stopped.append(model_dir.parent.name)

    def model_of(config: str) -> tuple[str, str]:
        return "image", f"s3://bucket/{config}/model.tar.gz"

    for config in ("cfg-v1", "cfg-v2"):  # already unpacked: no download
        (tmp_path / "endpoints" / config / "model").mkdir(parents=True)
    serving: Any = LocalServing(tmp_path, model_of, s3=None, start=start)
    serving.route("ep", {"cfg-v1": 1.0})
    serving.route("ep", {"cfg-v1": 0.75, "cfg-v2": 0.25})
    assert started == ["cfg-v1", "cfg-v2"] and serving.backend("cfg-v2") == "http://cfg-v2"
    serving.route("ep", {"cfg-v1": 1.0})  # rolled back: the canary's fleet goes
    assert stopped == ["cfg-v2"] and serving.backend("cfg-v2") is None
    serving.close()
    assert stopped == ["cfg-v2", "cfg-v1"]
