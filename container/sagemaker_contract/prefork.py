"""A minimal pre-fork HTTP/1.1 server for the inference WSGI app: the default `serve` server.

Why not gunicorn: measured here, gunicorn's sync worker spent ~340 us of CPU per request around an app call
of ~160 us (one-row CSV), so the server, not the model, set the throughput. This server does only what the
SageMaker hosting contract needs, in ~10x less code per request: a shared listening socket, one process per
core (each loads the model once), blocking accept, one request per connection (Content-Length or chunked
bodies, `Expect: 100-continue`), `Connection: close` like gunicorn's sync workers, graceful SIGTERM
(in-flight requests finish, then exit 0), and worker restarts. gunicorn stays available:
`SAGEMAKER_MODEL_SERVER=gunicorn`.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import time
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
REQUEST_TIMEOUT = 60.0  # SageMaker's own /invocations limit
GRACEFUL_SECONDS = 20.0  # under SageMaker's 30 s between SIGTERM and SIGKILL


class _Stop(Exception):
    pass


class _BadRequest(Exception):
    pass


def _log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] [{os.getpid()}] {message}", file=sys.stderr, flush=True)


def _read_request(conn: socket.socket) -> tuple[bytes, bytes, dict[str, str], bytes] | None:
    """(method, target, headers, body), or None when the client closed without a request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            if data:
                raise _BadRequest("incomplete request")
            return None
        data += chunk
        if len(data) > MAX_HEADER_BYTES and b"\r\n\r\n" not in data:
            raise _BadRequest("request headers too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        method, target, _version = lines[0].split(b" ", 2)
    except ValueError:
        raise _BadRequest("malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _BadRequest("malformed header")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("expect", "").lower() == "100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(conn, rest)
    else:
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            raise _BadRequest("invalid Content-Length") from None
        from sagemaker_contract.serving import MAX_PAYLOAD_BYTES

        if length > MAX_PAYLOAD_BYTES:
            # The app answers 413 from the header alone; drain a moderately large body first so the client
            # is not reset mid-upload and reads the 413.
            received = len(rest)
            while received < min(length, 4 * MAX_PAYLOAD_BYTES):
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
            return method, target, headers, b""
        parts = [rest]
        received = len(rest)
        while received < length:
            chunk = conn.recv(min(length - received, 1 << 20))
            if not chunk:
                raise _BadRequest("incomplete body")
            parts.append(chunk)
            received += len(chunk)
        body = b"".join(parts)[:length]
    return method, target, headers, body


def _read_chunked(conn: socket.socket, buffered: bytes) -> bytes:
    from sagemaker_contract.serving import MAX_PAYLOAD_BYTES

    buffer = bytearray(buffered)
    body = bytearray()

    def need(n: int) -> None:
        while len(buffer) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise _BadRequest("incomplete chunked body")
            buffer.extend(chunk)

    while True:
        while b"\r\n" not in buffer:
            need(len(buffer) + 1)
        line, _, remainder = bytes(buffer).partition(b"\r\n")
        buffer[:] = remainder
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            raise _BadRequest("malformed chunk size") from None
        if size == 0:
            return bytes(body)
        need(size + 2)
        body.extend(buffer[:size])
        del buffer[: size + 2]
        if len(body) > MAX_PAYLOAD_BYTES:
            return bytes(body)  # the app answers 413


def _environ(method: bytes, target: bytes, headers: dict[str, str], body: bytes, port: int) -> dict[str, Any]:
    path, _, query = target.decode("latin-1").partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.decode("latin-1"),
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if "transfer-encoding" in headers:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers.items():
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length":
            environ.setdefault("CONTENT_LENGTH", value)
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def _respond(conn: socket.socket, app: Any, environ: dict[str, Any], head_only: bool) -> None:
    status_headers: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status_headers[:] = [status, headers]

    chunks = app(environ, start_response)
    body = b"".join(chunks)
    status, headers = status_headers
    lines = [f"HTTP/1.1 {status}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if not any(name.lower() == "content-length" for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))


def _simple(conn: socket.socket, status: str, message: str) -> None:
    body = (message + "\n").encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with contextlib.suppress(OSError):
        conn.sendall(head.encode() + body)


def _worker(listener: socket.socket, port: int) -> None:
    state = {"busy": False, "stop": False}

    def on_term(signum: int, frame: Any) -> None:
        state["stop"] = True
        if not state["busy"]:
            raise _Stop

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    from sagemaker_contract.serving import create_app

    app = create_app()  # once per worker, after the fork
    try:
        while not state["stop"]:
            conn, _ = listener.accept()
            state["busy"] = True
            try:
                conn.settimeout(REQUEST_TIMEOUT)
                request = _read_request(conn)
                if request is not None:
                    method, target, headers, body = request
                    _respond(conn, app, _environ(method, target, headers, body, port), method == b"HEAD")
            except _BadRequest as error:
                _simple(conn, "400 Bad Request", f"Bad request: {error}.")
            except (OSError, TimeoutError):
                pass  # the client went away or stalled: nothing to answer
            finally:
                with contextlib.suppress(OSError):
                    conn.close()
                state["busy"] = False
    except _Stop:
        pass
    os._exit(0)


def serve(port: int, workers: int) -> int:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(2048)
    _log(f"listening on 0.0.0.0:{port} with {workers} worker(s)")
    children: set[int] = set()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            try:
                _worker(listener, port)
            except BaseException:  # a worker must never return into the master's loop
                import traceback

                traceback.print_exc()
                os._exit(1)
        children.add(pid)

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop  # out of the blocking waitpid (Python would otherwise retry it)

    for _ in range(workers):
        spawn()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    last_restart = 0.0
    try:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            children.discard(pid)
            _log(f"worker {pid} exited ({status}); starting a new one")
            if time.monotonic() - last_restart < 1:
                time.sleep(1)  # a worker crashing at start-up must not spin the CPU
            last_restart = time.monotonic()
            spawn()
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _log("shutting down: waiting for in-flight requests")
    listener.close()
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACEFUL_SECONDS
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _log("shut down")
    return 0
