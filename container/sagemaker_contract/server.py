"""`serve`: granian (a Rust HTTP server: hyper's HTTP/1.1 parser on tokio) runs the inference app.

Why granian, and why this small bridge (issue 10, measured in bench/serve.py):
- The HTTP parsing, keep-alive and slow or idle connections live in Rust, off the Python workers: 64 clients
  trickling a byte a second, or sitting idle, cost a few kB each and never block `/ping`.
- hyper frames requests strictly: a bad Content-Length, chunk size or request line gets a 400 and an
  oversized header block a 431 before Python sees anything.
- The app stays the plain WSGI callable in `serving.py`, behind granian's native RSGI interface and this
  bridge. Not granian's WSGI interface, though it costs ~25% less CPU per one-row request here: its body stream
  turns a broken or truncated body into a quiet end of body (the app would answer 200 for half a payload) and
  has no deadline on a body read. Not ASGI: ~15% more CPU than RSGI (three awaited calls per request, not
  one). Through RSGI the bridge gets an error for a broken body, reads at most the 6 MB limit, and holds every
  body to one total deadline.

Per worker process (one per core, `SAGEMAKER_MODEL_SERVER_WORKERS` overrides): one model load, one uvloop event
loop, and the app's parsing and formatting called on it synchronously; requests parsed while others wait for
the model share one predict call (batching.py). A worker's memory for one request is the body (at most 6 MB),
the joined copy of it, and what the app's parser makes of it.

Environment:
- `SAGEMAKER_BIND_TO_PORT` (inference pipelines) else port 8080; `SAGEMAKER_MODEL_SERVER_HOST` else 0.0.0.0
  (host-side tests bind to loopback).
- `SAGEMAKER_MODEL_SERVER_WORKERS` (default: number of cores).
- `SAGEMAKER_MODEL_SERVER_TIMEOUT`: seconds for a request's whole body to arrive after its headers (default 60,
  SageMaker's own limit for /invocations), else 408.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagemaker_contract.serving import InferenceApp

SERVING_USER = "model"
GRACEFUL_SECONDS = 20  # workers finish in-flight requests within this, under SageMaker's 30 s before SIGKILL
MAX_HEADER_BYTES = (
    16 * 1024
)  # hyper answers 431 past roughly this (its read buffer; granian's minimum is 8 KiB)
HEADER_TIMEOUT_MS = 10_000  # the request line and headers must arrive within this, however they trickle in
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when the master dies (even by SIGKILL or the OOM killer).

    granian's workers are plain multiprocessing children: without this a killed master leaves them running and
    holding the port, answering from a server nobody supervises. SIGKILL, not SIGTERM: with its master gone, a
    granian worker's graceful shutdown was seen to hang in its signal handler (1 run in ~10 here), and there is
    nobody left to finish it for anyway.
    """
    # A forked worker starts with the master's signal handlers, which only set a flag in the master's loop: a
    # SIGTERM now, while the model loads, would be lost and the worker would then serve on, unsupervised.
    # Until granian installs the worker's own handlers (right after this factory), SIGTERM simply ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the master died before the prctl: nobody would send the signal
        os._exit(0)


class Bridge:
    """RSGI (granian's native interface) -> the inference app: reads the body under the size limit and the
    request deadline, has the app parse it on this worker's event loop, and predicts through the worker's
    batcher (requests waiting at the same time share one predict call: batching.py)."""

    def __init__(self, app: InferenceApp, timeout: float, max_body: int) -> None:
        # Imported here, in the worker: the master imports no numpy (it forks the workers).
        from sagemaker_contract.batching import PredictionBatcher
        from sagemaker_contract.serving import Invocation

        self.app = app
        self.batcher = PredictionBatcher(app.predict)
        self._invocation = Invocation
        self.deadlines = Deadlines(timeout)
        self.max_body = max_body

    async def __call__(self, scope: Any, proto: Any) -> None:
        # The request as the app reads it (`InferenceApp.handle`): a WSGI-style environ with the few keys it uses.
        environ: dict[str, Any] = {"REQUEST_METHOD": scope.method, "PATH_INFO": scope.path}
        length: int | None = None
        chunked = False
        for name, value in scope.headers.items():
            if name == "content-length":
                length = int(value)  # hyper accepted it: digits only, one value
                environ["CONTENT_LENGTH"] = value
            elif name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name == "accept":
                environ["HTTP_ACCEPT"] = (
                    f"{environ['HTTP_ACCEPT']},{value}" if "HTTP_ACCEPT" in environ else value
                )
            elif name == "transfer-encoding":
                chunked = True
        task = self.deadlines.start()
        try:
            body = await self._read_body(proto, length, chunked)
        except asyncio.CancelledError:
            if not self.deadlines.expired(task):
                raise  # cancelled by the server (shutdown, the client left): not ours to answer
            task.uncancel()
            _answer(proto, 408, f"The request body did not arrive within {self.deadlines.seconds:.0f} s.")
            return
        except (
            _BrokenBody,
            RuntimeError,
        ) as error:  # granian raises RuntimeError subclasses on a broken body
            message = str(error) if isinstance(error, _BrokenBody) else _BrokenBody.MESSAGE
            _answer(proto, 400, message)
            return
        finally:
            self.deadlines.stop(task)
        environ["wsgi.input"] = io.BytesIO(body)
        outcome = self.app.handle(environ)  # sync, on this worker's loop: parsing, checks, errors
        if isinstance(outcome, self._invocation):
            try:
                predictions = await self.batcher.predict(outcome.features)
            except Exception:
                outcome = self.app.prediction_failed()
            else:
                outcome = self.app.answer(outcome, predictions)
        proto.response_bytes(
            outcome.status,
            [("content-type", outcome.content_type), ("content-length", str(len(outcome.body)))],
            outcome.body,
        )

    async def _read_body(self, proto: Any, length: int | None, chunked: bool) -> bytes:
        """The whole body, or its first max_body + 1 bytes (the app then answers 413); nothing over the limit
        is buffered. A declared length over the limit is read and dropped, up to 4x the limit, before the app
        answers 413 from the header: a client still uploading would otherwise be reset before it reads the 413."""
        if not chunked:
            if length is None or length == 0:
                return b""
            if length <= self.max_body:
                return await proto()  # hyper holds it to Content-Length; a short or broken body raises
        parts: list[bytes] = []
        received = 0
        ended = False
        # granian's body iterator yields b"" once at the end of the body, then stops; a broken body (a bad
        # chunk size, a connection closed early) also comes out as b"", followed by that final b"".
        async for chunk in proto:
            if ended:
                raise _BrokenBody(_BrokenBody.MESSAGE)
            if not chunk:
                ended = True
                continue
            received += len(chunk)
            if length is not None and length > self.max_body:
                if received >= min(length, 4 * self.max_body):
                    break
                continue  # drained, not kept
            parts.append(chunk)
            if received > self.max_body:
                break  # chunked and over the limit: stop reading; the app sees max_body + 1 bytes
        if length is not None and length > self.max_body:
            return b""
        return b"".join(parts)[: self.max_body + 1]


class Deadlines:
    """One total deadline per body read, for every request of a worker, kept by one timer that ticks only while
    a read is under way. asyncio.timeout's timer per request cost ~5.5 us of a one-row request's ~200 here.
    A read past its deadline is cancelled within a tick (a quarter of the deadline, at most 1 s) of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(1.0, seconds / 4)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._ticking = False

    def start(self) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None, "a request runs in an asyncio task"
        loop = task.get_loop()
        self._due[task] = loop.time() + self.seconds
        if not self._ticking:
            self._ticking = True
            loop.call_later(self.tick, self._check, loop)
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        return task in self._expired

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._ticking = bool(self._due)
        if self._ticking:
            loop.call_later(self.tick, self._check, loop)


class _BrokenBody(Exception):
    MESSAGE = "The request body ended early or its chunked framing is malformed."


def _answer(proto: Any, status: int, message: str) -> None:
    body = (message + "\n").encode()
    with contextlib.suppress(Exception):  # the client may already be gone
        proto.response_bytes(status, [("content-type", "text/plain"), ("connection", "close")], body)


def create_worker_app() -> Bridge:
    """granian's factory: runs once in each worker process after it starts (one model load per worker)."""
    master = int(os.environ["_SERVE_MASTER_PID"])
    _die_with_parent(master)
    from sagemaker_contract.serving import MAX_PAYLOAD_BYTES, create_app, parse_csv

    _port, _workers, timeout = _settings()
    app = create_app()
    # A worker's first large CSV request imports and sets up pyarrow: ~0.2 s that request would wait (a 260 ms
    # p99 at 1,000 rows and concurrency 1). Pay it here, before the worker serves.
    parse_csv(b"1,2\n" * 4096)
    return Bridge(app, timeout, MAX_PAYLOAD_BYTES)


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
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    _drop_privileges()
    port, workers, _timeout = _settings()
    host = os.environ.get("SAGEMAKER_MODEL_SERVER_HOST") or "0.0.0.0"
    os.environ["_SERVE_MASTER_PID"] = str(os.getpid())  # read by each worker: see _die_with_parent
    print(f"serving on {host}:{port} with {workers} worker(s) (granian)", file=sys.stderr, flush=True)
    Granian(
        "sagemaker_contract.server:create_worker_app",
        address=host,
        port=port,
        interface=Interfaces.RSGI,  # granian's native interface: the cheapest per request (bench/serve.py)
        factory=True,
        workers=workers,
        loop=Loops.uvloop,  # libuv under each worker's asyncio API: cheaper per request (requirements.txt)
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
