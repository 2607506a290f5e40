"""Our inference app for a peer server in bench/serve.py: uvicorn + httptools, through an ASGI version of the
bridge the image runs under granian (sagemaker_contract/server.py speaks granian's RSGI).

    uvicorn --factory peer_apps:uvicorn_app --http httptools ...   (PYTHONPATH=container:bench)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sagemaker_contract.serving import MAX_PAYLOAD_BYTES, create_app

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class AsgiBridge:
    """The image's bridge (sagemaker_contract.server.Bridge, RSGI) redone for ASGI servers: the same body limit,
    deadline and broken-body rule, for a fair peer."""

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


def uvicorn_app() -> AsgiBridge:
    return AsgiBridge(create_app(), int(os.environ.get("BENCH_PORT", "8080")), 60.0, MAX_PAYLOAD_BYTES)
