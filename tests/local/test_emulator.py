"""mlpipe.local.emulator, which the local run and every Lambda test stand on: starts on a free port, resets,
always stops."""

from __future__ import annotations

import os
from typing import Any

import boto3
import pytest

from mlpipe.local.emulator import EmulatorError, MotoServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_starts_resets_and_stops() -> None:
    with MotoServer() as server:
        pid = server.pid
        assert pid is not None and _alive(pid) and server.owned
        assert server.endpoint_url == f"http://127.0.0.1:{server.port}"
        s3 = boto3.session.Session(region_name="us-east-1").client("s3", endpoint_url=server.endpoint_url)
        s3.create_bucket(Bucket="emulator-test")
        server.reset()
        assert s3.list_buckets()["Buckets"] == []
    assert not _alive(pid)


def test_it_stops_even_when_the_block_is_interrupted() -> None:
    server = MotoServer()
    with pytest.raises(KeyboardInterrupt), server:
        pid = server.pid
        raise KeyboardInterrupt
    assert pid is not None and not _alive(pid)


def test_an_existing_endpoint_is_reused_not_started_or_stopped(moto_server: Any) -> None:
    with MotoServer(endpoint_url=moto_server.endpoint_url) as reused:
        assert reused.pid is None and not reused.owned
        assert reused.endpoint_url == moto_server.endpoint_url and reused.port == moto_server.port
    assert _alive(moto_server.pid)


def test_an_unreachable_endpoint_is_a_clear_error() -> None:
    with (
        pytest.raises(EmulatorError, match="no emulator answers"),
        MotoServer(endpoint_url="http://127.0.0.1:9"),
    ):
        pass
