"""The real model server (`python -m sagemaker_contract serve`) on loopback: robustness against slow, idle,
malformed and oversized requests, SIGTERM with queued requests, and workers that die with their master.

Timed assertions here are generous bounds on robustness properties (a /ping within 1 s), never benchmarks:
performance is measured in bench/serve.py.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.conftest import ROOT
from tests.container.test_serving import ROWS, model_dir  # noqa: F401 (the trained-model fixture)

ROW = ROWS[0].encode()
POST = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nConnection: close\r\n"
WORKERS = 2
# A body shorter than its Content-Length: it can only end by the client closing its side of the connection.
SHORT_BODY = POST + b"Content-Length: %d\r\n\r\n" % (len(ROW) + 10) + ROW


@dataclass
class Server:
    port: int
    process: subprocess.Popen

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children if _is_worker(int(pid))]


def _is_worker(pid: int) -> bool:
    # A forked worker keeps the master's command line; a spawned one runs "-c from multiprocessing.spawn ...".
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"sagemaker_contract" in command or b"multiprocessing.spawn" in command
    return False


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int, timeout: float = 1.0) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", "/ping")
        status = connection.getresponse().status
        connection.close()
        return status
    except (OSError, http.client.HTTPException):
        return None


@contextlib.contextmanager
def running_server(
    model_dir: Path,  # noqa: F811
    workers: int = WORKERS,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    port = _free_port()
    env = {
        **(extra_env or {}),
        **os.environ,
        "OPT_ML_DIR": str(model_dir.parent),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_HOST": "127.0.0.1",  # host-side tests never listen beyond loopback
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
        "PYTHONPATH": str(ROOT / "container"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_contract", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while _ping(port) != 200:
            assert process.poll() is None, "the server exited during start-up"
            assert time.monotonic() < deadline, "the server did not answer /ping within 30 s"
            time.sleep(0.1)
        server = Server(port, process)
        deadline = time.monotonic() + 10
        while len(server.workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:  # noqa: F811
    with running_server(model_dir) as running:
        yield running


def _exchange(port: int, request: bytes, timeout: float = 10, half_close: bool = False) -> bytes:
    """Send a raw request (then half-close: the only way to end a body early) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


# -- slow and idle clients ------------------------------------------------------------------------------------
def _trickle(sockets: list[socket.socket], payload: bytes, stop: threading.Event) -> None:
    position = 0
    while not stop.is_set() and position < len(payload):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(payload[position : position + 1])
        position += 1
        stop.wait(0.5)  # a byte every half second per client: never idle long enough to be timed out


@pytest.mark.parametrize("kind", ["headers", "body", "idle"])
def test_ping_answers_while_64_slow_or_idle_clients_hold_connections(server: Server, kind: str) -> None:
    head = POST + b"Content-Length: %d\r\n\r\n" % (len(ROW) + 1000)
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(64)]
    stop = threading.Event()
    if kind == "body":
        for sock in sockets:
            sock.sendall(head)
    payload = {"headers": head, "body": ROW + b"\n" * 1000, "idle": b""}[kind]
    trickler = threading.Thread(target=_trickle, args=(sockets, payload, stop), daemon=True)
    trickler.start()
    try:
        time.sleep(1)  # the slow clients are connected and, with a pre-fork server, accepted by every worker
        for _ in range(5):
            started = time.monotonic()
            assert _ping(server.port, timeout=1) == 200, f"/ping got no answer within 1 s ({kind} clients)"
            assert time.monotonic() - started < 1
            time.sleep(0.2)
    finally:
        stop.set()
        trickler.join()
        for sock in sockets:
            sock.close()


def test_trickled_head_and_body_meet_a_total_deadline(model_dir: Path) -> None:  # noqa: F811
    """A byte a second resets no timer: the head has 10 s in all, the body the request deadline (here 2 s)."""
    with running_server(model_dir, extra_env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "2"}) as running:
        head = POST + b"Content-Length: 100\r\n\r\n"
        for payload, prefix, bound in ((head, b"", 20), (b"1" * 100, head, 8)):
            with socket.create_connection(("127.0.0.1", running.port), timeout=1) as sock:
                sock.sendall(prefix)
                started, answer, position = time.monotonic(), b"", 0
                while time.monotonic() - started < bound:
                    with contextlib.suppress(OSError):
                        sock.send(payload[position : position + 1])
                    position += 1
                    try:
                        chunk = sock.recv(1000)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break  # the server closed the connection
                    answer += chunk
                elapsed = time.monotonic() - started
            assert elapsed < bound, f"a trickling client still held a connection after {elapsed:.0f} s"
            if prefix:  # the body's deadline is answered with a reason
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_body_deadlines_cancel_only_late_reads_and_stop_ticking_when_idle() -> None:
    """The bridge's one-timer deadlines (server.Deadlines): a read past its deadline is cancelled and marked
    expired (the bridge answers 408); a read that ends in time, or a task cancelled by someone else (a client
    that left, shutdown), is not expired; with no read under way no timer is left ticking."""
    import asyncio

    from sagemaker_contract.server import Deadlines

    deadlines = Deadlines(0.2)

    async def read(seconds: float) -> str:
        task = deadlines.start()
        try:
            await asyncio.sleep(seconds)
            return "read"
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise
            task.uncancel()
            return "expired"
        finally:
            deadlines.stop(task)

    async def scenario() -> tuple[list[object], float, bool]:
        started = asyncio.get_running_loop().time()
        cancelled_elsewhere = asyncio.ensure_future(read(5))
        asyncio.get_running_loop().call_later(0.05, cancelled_elsewhere.cancel)
        outcomes = await asyncio.gather(read(0.01), read(5), cancelled_elsewhere, return_exceptions=True)
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(0.3)  # a tick later: nothing under way, so the timer stopped
        return outcomes, elapsed, deadlines._ticking

    outcomes, elapsed, ticking = asyncio.run(scenario())
    assert outcomes[:2] == ["read", "expired"]
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert 0.2 <= elapsed < 0.2 + deadlines.tick + 1.0, elapsed  # a busy machine delays timers
    assert not ticking and not deadlines._due and not deadlines._expired


# -- strict HTTP/1.1 framing ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(POST + b"Content-Length: -1\r\n\r\n" + ROW, 400, id="negative-content-length"),
        pytest.param(POST + b"Content-Length: +%d\r\n\r\n" % len(ROW) + ROW, 400, id="signed-content-length"),
        pytest.param(
            POST + b"Content-Length: %d\r\nContent-Length: 3\r\n\r\n" % len(ROW) + ROW,
            400,
            id="two-content-lengths",
        ),
        pytest.param(
            POST + b"Transfer-Encoding: chunked\r\n\r\n0x%x\r\n" % len(ROW) + ROW + b"\r\n0\r\n\r\n",
            400,
            id="chunk-size-0x",
        ),
        pytest.param(
            POST + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(ROW) + ROW + b"\r\nzz\r\n\r\n",
            400,
            id="bad-second-chunk",
        ),
        pytest.param(SHORT_BODY, 400, id="body-shorter-than-declared"),
        pytest.param(POST + b"X-Big: " + b"a" * 65536 + b"\r\n\r\n", 431, id="64-KiB-header"),
        pytest.param(b"GET /ping\r\n\r\n", 400, id="no-http-version"),
        pytest.param(b"GET /ping HTTP/1.1\r\nHost x\r\n\r\n", 400, id="header-without-colon"),
    ],
)
def test_strict_framing(server: Server, request_bytes: bytes, status: int) -> None:
    answer = _exchange(server.port, request_bytes, half_close=request_bytes == SHORT_BODY)
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:300]


def test_well_formed_chunked_and_keep_alive(server: Server) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(ROW), ROW)
    answer = _exchange(server.port, POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert answer.startswith(b"HTTP/1.1 200")
    # Keep-alive: three requests on one connection, the connection stays open between them.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    sockets = set()
    for _ in range(3):
        connection.request("POST", "/invocations", body=ROW, headers={"Content-Type": "text/csv"})
        response = connection.getresponse()
        assert response.status == 200 and response.read().strip()
        assert (response.getheader("connection") or "").lower() != "close"
        sockets.add(id(connection.sock))
    assert len(sockets) == 1 and connection.sock is not None
    connection.close()


def test_chunk_announcing_1_gib_is_answered_413_after_the_6_mb_limit(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (1 << 30))
        block = (ROW + b"\n") * (65536 // (len(ROW) + 1))
        sent, answer = 0, b""
        while sent < 16 << 20 and not answer:
            _, writable, _ = select.select([], [sock], [], 5)
            if writable:
                try:
                    sent += sock.send(block)
                except OSError:
                    break  # the server answered and closed: read what it said
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = sock.recv(65536)
        with contextlib.suppress(OSError):
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), f"no 413 after {sent:,} bytes: {answer[:200]!r}"
    assert sent < 12 << 20, f"the server read {sent:,} bytes of a body over the 6 MB limit"


# -- memory: a request costs a bounded multiple of its size -----------------------------------------------------
def _peak_rss(pids: list[int]) -> dict[int, int]:
    peaks = {}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1]) * 1024
    return peaks


@pytest.mark.parametrize("content_type", ["text/csv", "application/json"])
def test_wide_rows_are_answered_within_a_bounded_multiple_of_their_size(
    server: Server, content_type: str
) -> None:
    """Rows of 200k and 1M columns (0.4 and 2 MB): a 400 (the model has 8 features), no worker killed, and no
    worker's peak memory grows by more than 20x the request (a 2 MB request of 1M columns took a worker to
    over 8 GB before)."""
    workers = server.workers()
    assert len(workers) == WORKERS
    for columns in (200_000, 1_000_000):
        values = ["1"] * columns
        body = (",".join(values) if content_type == "text/csv" else "[" + ",".join(values) + "]").encode()
        before = _peak_rss(workers)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        assert response.status == 400 and b"needs 8 feature values" in response.read()
        grown = max(after - before[pid] for pid, after in _peak_rss(workers).items())
        assert grown < 20 * len(body), (
            f"a worker's peak memory grew {grown / 1e6:.0f} MB for {len(body):,} bytes"
        )
        assert server.workers() == workers, "a worker died"


# -- SIGTERM and the master's death ---------------------------------------------------------------------------
def test_sigterm_answers_or_refuses_queued_requests_cleanly(model_dir: Path) -> None:  # noqa: F811
    """Requests queued behind busy workers when SIGTERM arrives get an answer or a clean close, never a reset."""
    big = ("\n".join(ROWS * (3_000_000 // len("\n".join(ROWS))))).encode()  # ~3 MB: tens of ms each
    request = POST + b"Content-Length: %d\r\n\r\n" % len(big) + big
    with running_server(model_dir) as running:
        sockets = []
        for _ in range(24):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=30)
            sock.sendall(request)
            sockets.append(sock)
        running.process.send_signal(signal.SIGTERM)
        outcomes = []
        for sock in sockets:
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
                outcomes.append(
                    "answered" if answer.startswith(b"HTTP/1.1 ") else ("refused" if not answer else "cut")
                )
            except ConnectionResetError:
                outcomes.append("reset")
            finally:
                sock.close()
        assert running.process.wait(timeout=30) == 0
    assert "reset" not in outcomes and "cut" not in outcomes, outcomes
    assert "answered" in outcomes


def test_workers_die_with_their_master(model_dir: Path) -> None:  # noqa: F811
    with running_server(model_dir) as running:
        workers = running.workers()
        assert len(workers) == WORKERS
        running.process.kill()  # SIGKILL: no chance to stop the workers itself
        running.process.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [pid for pid in workers if _alive(pid)]
        assert alive == [], f"workers {alive} outlived their master"
        assert _ping(running.port) is None, "the port still answers without a master"
