"""The AWS the handlers see locally: one HTTP endpoint in front of the emulator and the stand-ins.

The handlers run unchanged with `AWS_ENDPOINT_URL` pointing here and the credentials of their own role.
Each request is routed by the service in its SigV4 credential scope:

- operations a stand-in implements (`LocalService`: the local SageMaker training API, model registry and
  hosting, CodePipeline, Application Auto Scaling, CloudWatch's alarm history) are answered here, in the service's JSON protocol, after an IAM check of the caller's
  access key against the actions its role was granted (`Permissions`), as AWS does; the stand-in learns
  the caller's principal (its ARN), as the service does (e.g. a model package's LastModifiedBy);
- everything else goes unchanged (same signed headers and body) to moto, which enforces IAM itself, and
  its answer is relayed back. moto runs in this process (its own WSGI application, called directly: a
  third of the time of its HTTP server per call) or, with an `upstream_url`, is an emulator elsewhere.
  One moto quirk is corrected on the way: JSON services get moto's XML AccessDenied body, which botocore
  reads as error code "403"; the gateway turns it into the `AccessDeniedException` AWS sends.

So every AWS call goes through botocore exactly as in Lambda: serialization, signing, retries, timeouts.
"""

from __future__ import annotations

import fnmatch
import http.client
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from botocore.exceptions import ClientError, ParamValidationError

from mlpipe.local.net import free_port
from mlpipe.local.store import json_default

_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request")
_XML_ACCESS_DENIED = re.compile(rb"<Code>AccessDenied</Code>\s*<Message>(?P<message>[^<]*)</Message>")
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"})


class AccessDenied(Exception):
    """The caller's role does not allow the action (raised by `Permissions.check`)."""


@dataclass
class Permissions:
    """Which actions each access key may call: the harness's own key anything, each role what it was granted.

    Only actions are checked, as moto does for its services; resource scoping is checked statically on the
    synthesized templates (tests/stacks).
    """

    principals: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # key -> (arn, actions)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def grant(self, access_key: str, principal_arn: str, actions: tuple[str, ...]) -> None:
        with self._lock:
            self.principals[access_key] = (principal_arn, tuple(a.lower() for a in actions))

    def principal(self, access_key: str) -> str:
        """The ARN of the identity behind an access key ('' for an unknown key)."""
        with self._lock:
            known = self.principals.get(access_key)
        return known[0] if known else ""

    def allows(self, access_key: str, action: str) -> bool:
        try:
            self.check(access_key, action)
        except AccessDenied:
            return False
        return True

    def check(self, access_key: str, action: str) -> None:
        with self._lock:
            principal = self.principals.get(access_key)
        if principal is None:
            raise AccessDenied(
                f"The security token included in the request is invalid ({access_key[:8]}...)."
            )
        arn, allowed = principal
        if not any(fnmatch.fnmatchcase(action.lower(), pattern) for pattern in allowed):
            raise AccessDenied(f"User: {arn} is not authorized to perform: {action}")


class LocalService(Protocol):
    """A stand-in for (part of) one AWS service with a JSON protocol."""

    signing_name: str  # the service in the SigV4 credential scope, also the IAM prefix (sagemaker)
    # Where the two differ (CloudWatch signs as `monitoring`), a stand-in has `iam_prefix` too ("cloudwatch").

    def implements(self, operation: str) -> bool: ...

    def required_actions(self, operation: str, params: dict[str, Any]) -> list[str]:
        """IAM actions the call needs beyond `<signing name>:<operation>` (e.g. iam:PassRole)."""
        ...

    def call(self, operation: str, params: dict[str, Any], principal: str) -> dict[str, Any]:
        """Answer as the service does for the caller `principal` (an IAM ARN); raise botocore's ClientError
        for a service error."""
        ...


@dataclass
class CallRecord:
    access_key: str
    service: str
    operation: str
    status: int


class InProcessMoto:
    """moto's WSGI application in this process: the emulator without an HTTP server in front of it.

    moto finds the service of a request by matching its host against every backend's URL patterns, under
    one global lock, on every request (40% of a call here). The SigV4 credential scope names the service
    and region already, so the application found for a scope is remembered.
    """

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.test import Client

        class ScopeCachedDispatcher(DomainDispatcherApplication):
            def __init__(self) -> None:
                super().__init__(create_backend_app)
                self.by_scope: dict[tuple[str, str], Any] = {}

            def get_application(self, environ: dict[str, Any]) -> Any:
                scope = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
                key = (scope["service"], scope["region"]) if scope else None
                cached = self.by_scope.get(key) if key else None
                if cached is None:
                    cached = super().get_application(environ)
                    if key:
                        self.by_scope[key] = cached
                return cached

        self._client = Client(ScopeCachedDispatcher())

    def __call__(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        path, _, query = path.partition("?")
        response = self._client.open(path=path, query_string=query, method=method, headers=headers, data=body)
        return response.status_code, dict(response.headers), response.get_data()


class Gateway:
    """A threaded HTTP server on a free loopback port, for the duration of a `with` block."""

    def __init__(
        self, upstream_url: str | None, services: list[LocalService], permissions: Permissions
    ) -> None:
        self.upstream = urlsplit(upstream_url) if upstream_url else None
        self._in_process = InProcessMoto() if upstream_url is None else None
        # Several stand-ins may share a service (SageMaker's training API and its model registry).
        self.services: dict[str, list[LocalService]] = {}
        for service in services:
            self.add(service)
        self.permissions = permissions
        self.calls: list[CallRecord] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, service: LocalService) -> None:
        """Serve `service`'s operations, instead of an earlier stand-in of the same kind."""
        kept = [s for s in self.services.get(service.signing_name, []) if type(s) is not type(service)]
        self.services[service.signing_name] = [*kept, service]

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the gateway is not running (use it in a with block)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self._server = _QuietServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-aws-gateway", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def install_direct_transport(self, client: Any) -> None:
        """Send this client's requests to `handle` in this process, without a socket: the same routing,
        IAM checks and stand-ins at a third of the cost per call (the tests use it; the local run does not).

        It replaces the client's HTTP session, the layer below botocore's `before-send` event: a fault
        injector's response there still means the request was never sent (botocore calls every
        `before-send` handler, so a transport registered as one would send it anyway)."""
        client._endpoint.http_session = _DirectSession(self)

    # -- routing ---------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        scope = _CREDENTIAL.search(headers.get("Authorization", ""))
        service_name = scope["service"] if scope else ""
        access_key = scope["key"] if scope else ""
        target = headers.get("X-Amz-Target", "")
        operation = target.rpartition(".")[2]
        service = next(
            (s for s in self.services.get(service_name, []) if operation and s.implements(operation)), None
        )
        if service is not None:
            status, response_headers, response_body = self._serve(service, access_key, operation, body)
        else:
            status, response_headers, response_body = self._forward(method, path, headers, body)
            if status == 403 and target and _XML_ACCESS_DENIED.search(response_body):
                message = _XML_ACCESS_DENIED.search(response_body)["message"].decode()  # type: ignore[index]
                status, response_headers, response_body = _json_error(400, "AccessDeniedException", message)
        self.calls.append(CallRecord(access_key, service_name, operation or f"{method} {path}", status))
        return status, response_headers, response_body

    def _serve(
        self, service: LocalService, access_key: str, operation: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            return _json_error(400, "SerializationException", "The request body is not JSON.")
        try:
            for action in [
                f"{getattr(service, 'iam_prefix', service.signing_name)}:{operation}",
                *service.required_actions(operation, params),
            ]:
                self.permissions.check(access_key, action)
        except AccessDenied as error:
            return _json_error(400, "AccessDeniedException", str(error))
        try:
            result = service.call(operation, params, self.permissions.principal(access_key))
        except ParamValidationError as error:
            # The service model's constraints, checked by the stand-in as the service checks them.
            return _json_error(400, "ValidationException", str(error))
        except ClientError as error:
            details = error.response.get("Error", {})
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            return _json_error(
                status, str(details.get("Code", "ValidationException")), str(details.get("Message", ""))
            )
        payload = json.dumps(result, default=json_default).encode()
        return 200, {"Content-Type": JSON_CONTENT_TYPE}, payload

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self._in_process is not None:
            status, response_headers, payload = self._in_process(method, path, headers, body)
            return status, {k: v for k, v in response_headers.items() if k.lower() not in HOP_BY_HOP}, payload
        assert self.upstream is not None
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            forwarded["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            payload = response.read()
            response_headers = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            return response.status, response_headers, payload
        finally:
            connection.close()


class _DirectSession:
    """botocore's HTTP session interface (`send`), answered by the gateway in this process."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def send(self, request: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        parts = urlsplit(request.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        headers.setdefault("Host", parts.netloc)  # urllib3 adds it on the wire; SigV4 signed it
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        status, response_headers, payload = self._gateway.handle(request.method, path, headers, body)
        return AWSResponse(request.url, status, response_headers, _Payload(payload))

    def close(self) -> None:
        pass


class _Payload(io.BytesIO):
    """A response body as botocore reads one off urllib3: streamed (`stream`) or read (`read`, S3 bodies)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.read()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request (a dropped connection, a killed process) is routine here: no traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _json_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-ErrorType": code}, body


class _Handler(BaseHTTPRequestHandler):
    owner: Gateway
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the client's
    # delayed ACK add ~40 ms to every call.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the gateway's own record of calls is `Gateway.calls`

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _any(self) -> None:
        body = self._body()
        headers = {k: v for k, v in self.headers.items()}
        try:
            status, response_headers, payload = self.owner.handle(self.command, self.path, headers, body)
        except Exception as error:  # the gateway must answer; the client sees a 500 like any AWS fault
            status, response_headers, payload = _json_error(500, "InternalFailure", f"local gateway: {error}")
        self.send_response(status)
        for name, value in response_headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any
