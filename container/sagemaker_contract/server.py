"""`serve`: granian (a Rust HTTP server: hyper's HTTP/1.1 parser on tokio) runs the inference app.

Why granian, and why this small bridge (issue 10, measured in bench/serve.py):
- The HTTP parsing, keep-alive and slow or idle connections live in Rust, off the Python workers: 64 clients
  trickling a byte a second, or sitting idle, cost a few kB each and never block `/ping`.
- hyper frames requests strictly: a bad Content-Length, chunk size or request line gets a 400 and an
  oversized header block a 431 before Python sees anything.
- The app stays the plain WSGI callable in `serving.py`. It runs behind the ASGI interface, not granian's
  WSGI one, because granian's WSGI body stream turns a broken or truncated body into a quiet end of body (the
  app would answer 200 for half a payload) and offers no deadline on a body read. Through ASGI this bridge
  sees a broken body as a disconnect, reads at most the 6 MB limit, and holds every request to one total
  deadline.

Per worker process (one per core, `SAGEMAKER_MODEL_SERVER_WORKERS` overrides): one model load, one event loop,
and the app called on it, one request at a time, as a sync worker would. A worker's memory for one request
is the body (at most 6 MB), the joined copy of it, and what the app's parser makes of it.

Environment:
- `SAGEMAKER_BIND_TO_PORT` (inference pipelines) else port 8080; `SAGEMAKER_BIND_TO_HOST` else 0.0.0.0 (tests
  bind to loopback).
- `SAGEMAKER_MODEL_SERVER_WORKERS` (default: number of cores).
- `SAGEMAKER_MODEL_SERVER_TIMEOUT`: seconds from a request's first byte of body to its answer (default 60,
  SageMaker's own limit for /invocations).

As root (SageMaker starts the container as root) the server drops to the unprivileged `model` user before it
binds: serving only reads /opt/ml/model. No nginx in front: SageMaker's own front end terminates the clients'
connections, and hyper already does what nginx would do here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import os
import pwd
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

SERVING_USER = "model"
GRACEFUL_SECONDS = 20  # workers finish in-flight requests within this, under SageMaker's 30 s before SIGKILL
MAX_HEADER_BYTES = (
    16 * 1024
)  # hyper answers 431 past roughly this (its read buffer; granian's minimum is 8 KiB)
HEADER_TIMEOUT_MS = 10_000  # the request line and headers must arrive within this, however they trickle in
_PR_SET_PDEATHSIG = 1

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the master dies (even by SIGKILL or the OOM killer).

    granian's workers are plain multiprocessing children: without this a killed master leaves them running and
    holding the port, answering from a server nobody supervises.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the master died before the prctl: nobody would send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def _reason(status: int) -> bytes:
    return {400: b"Bad request", 408: b"Request timeout", 413: b"Payload too large"}.get(status, b"Error")


class Bridge:
    """ASGI -> WSGI for the inference app: reads the body under the size limit and the request deadline."""

    def __init__(self, app: Callable[..., Any], port: int, timeout: float, max_body: int) -> None:
        self.app = app
        self.port = str(port)
        self.timeout = timeout
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets are off; nothing else reaches an `asginl` app
            return
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": scope["path"],
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": "localhost",
            "SERVER_PORT": self.port,
            "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        length: int | None = None
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name == "content-length":
                length = int(value)  # hyper accepted it: digits only, one value
                environ["CONTENT_LENGTH"] = value
            elif name == "content-type":
                environ["CONTENT_TYPE"] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._read_body(receive, length)
        except TimeoutError:
            await _answer(send, 408, f"The request body did not arrive within {self.timeout:.0f} s.")
            return
        except _BrokenBody as error:
            await _answer(send, 400, str(error))
            return
        environ["wsgi.input"] = io.BytesIO(body)
        status_headers: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status_headers[:] = [int(status[:3]), headers]

        chunks = self.app(environ, start_response)  # sync, on this worker's loop: one request at a time
        status, headers = status_headers
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def _read_body(self, receive: Receive, length: int | None) -> bytes:
        """The whole body, or its first max_body + 1 bytes (the app then answers 413); nothing over the limit
        is buffered. A declared length over the limit is read and dropped, up to 4x the limit, before the app
        answers 413 from the header: a client still uploading would otherwise be reset before it reads the 413."""
        if length is not None and length > self.max_body:
            drained = 0
            while drained < min(length, 4 * self.max_body):
                message = await receive()
                drained += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    break
            return b""
        parts: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # hyper ends the body this way on a malformed chunk or a connection closed early.
                raise _BrokenBody("The request body ended early or its chunked framing is malformed.")
            chunk = message.get("body", b"")
            parts.append(chunk)
            received += len(chunk)
            if received > self.max_body:
                break  # chunked and over the limit: stop reading; the app sees max_body + 1 bytes
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        return body[: self.max_body + 1]


class _BrokenBody(Exception):
    pass


async def _answer(send: Send, status: int, message: str) -> None:
    body = (message + "\n").encode()
    with contextlib.suppress(Exception):  # the client may already be gone
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_worker_app() -> Bridge:
    """granian's factory: runs once in each worker process after it starts (one model load per worker)."""
    master = int(os.environ["_SERVE_MASTER_PID"])
    _die_with_parent(master)
    from sagemaker_contract.serving import MAX_PAYLOAD_BYTES, create_app

    port, _workers, timeout = _settings()
    return Bridge(create_app(), port, timeout, MAX_PAYLOAD_BYTES)


def _settings() -> tuple[int, int, float]:
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or 8080)
    workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS") or os.cpu_count() or 1)
    timeout = float(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT") or 60)
    return port, workers, timeout


def _drop_privileges() -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVING_USER)
    except KeyError:
        return  # no such user (e.g. a custom image): stay as is
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = user.pw_dir


def main(args: list[str]) -> int:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    _drop_privileges()
    port, workers, _timeout = _settings()
    host = os.environ.get("SAGEMAKER_BIND_TO_HOST") or "0.0.0.0"
    os.environ["_SERVE_MASTER_PID"] = str(os.getpid())  # read by each worker: see _die_with_parent
    print(f"serving on {host}:{port} with {workers} worker(s) (granian)", file=sys.stderr, flush=True)
    Granian(
        "sagemaker_contract.server:create_worker_app",
        address=host,
        port=port,
        interface=Interfaces.ASGINL,  # ASGI without lifespan events: the factory does the start-up work
        factory=True,
        workers=workers,
        http=HTTPModes.http1,  # SageMaker's front end speaks HTTP/1.1 to the container
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_TIMEOUT_MS, max_buffer_size=MAX_HEADER_BYTES),
        backlog=2048,
        workers_kill_timeout=GRACEFUL_SECONDS,
        respawn_failed_workers=True,  # a worker killed (e.g. by the OOM killer) comes back
        log_level="warning" if os.environ.get("SAGEMAKER_MODEL_SERVER_LOGLEVEL") == "warning" else "info",
    ).serve()
    print("shut down", file=sys.stderr, flush=True)
    return 0
