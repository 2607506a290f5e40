"""Seeded fault injection at the HTTP boundary of the handlers' AWS clients.

`FaultInjector.install(client)` registers a botocore `before-send` handler, so a fault happens where AWS's
happen: after the request is signed, before (or after) it reaches the service, with botocore's own retry
mode and timeouts reacting to it exactly as in Lambda. For each request attempt a seeded plan picks:

- `throttle`: the service answers 400 with its throttling error (botocore retries it);
- `server_error`: 500 InternalError (retried);
- `drop`: the connection breaks before the request arrives (what a timeout looks like to the caller);
- `applied_then_error`, `applied_then_drop`: the request IS applied, then the caller gets a 500 or a broken
  connection: the retry meets its own earlier write (the ambiguity that breaks naive idempotency);
- `crash_before`, `crash_after`: the Lambda sandbox dies before sending, or after the call was applied
  (`SandboxCrash`, a BaseException nothing in a handler catches; the platform then retries).

The same plan and seed give the same faults, so a failing trial can be replayed. Used by the fault tests
(tests/faults) and by `mlpipe-local-run --faults SEED`.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session

TRANSIENT = ("throttle", "server_error", "drop", "applied_then_error", "applied_then_drop")
CRASHES = ("crash_before", "crash_after")
ALL_KINDS = TRANSIENT + CRASHES


class SandboxCrash(BaseException):
    """The Lambda sandbox died here. Not an Exception: no handler code catches it, as none survives a crash."""


@dataclass(frozen=True)
class InjectedFault:
    index: int  # the request attempt it hit, counted from 0 over the whole plan
    service: str
    operation: str
    kind: str


@dataclass
class FaultPlan:
    """Which request attempts fail, and how: `by_operation` (named calls), `at` (attempt indexes) or `rate`
    (each attempt with that probability, from `kinds`), optionally capped by `max_faults`."""

    seed: int = 0
    rate: float = 0.0
    kinds: tuple[str, ...] = TRANSIENT
    at: dict[int, str] = field(default_factory=dict)  # attempt index -> kind
    # "service.Operation" -> the kinds for its successive attempts (None: no fault), e.g. the 2nd UpdateItem
    by_operation: dict[str, list[str | None]] = field(default_factory=dict)
    max_faults: int | None = None
    services: tuple[str, ...] | None = None  # only these services' calls (None: all)
    injected: list[InjectedFault] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (service, operation) of every attempt
    attempts: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def decide(self, service: str, operation: str) -> str | None:
        with self._lock:
            if not self.enabled or (self.services is not None and service not in self.services):
                return None
            index = self.attempts
            self.attempts += 1
            self.calls.append((service, operation))
            if self.max_faults is not None and len(self.injected) >= self.max_faults:
                return None
            planned = self.by_operation.get(f"{service}.{operation}")
            if planned is not None:
                kind = planned.pop(0) if planned else None
            elif self.at:
                kind = self.at.get(index)
            else:
                kind = self._random.choice(self.kinds) if self._random.random() < self.rate else None
            if kind is not None:
                self.injected.append(InjectedFault(index, service, operation, kind))
            return kind


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def error_response(request: Any, status: int, code: str, message: str) -> AWSResponse:
    """An AWS error as the request's protocol shapes it, so botocore reads the code as from the service."""
    headers = {key.lower(): value for key, value in request.headers.items()}
    target = headers.get("x-amz-target")
    content_type = headers.get("content-type", "")
    content_type = content_type.decode() if isinstance(content_type, bytes) else content_type
    if target:  # JSON protocols (DynamoDB, SageMaker, CodePipeline, SQS)
        body = json.dumps({"__type": code, "message": message}).encode()
        response_headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    elif "x-www-form-urlencoded" in content_type:  # query protocol (SNS, STS, IAM)
        body = (
            f"<ErrorResponse><Error><Type>{'Receiver' if status >= 500 else 'Sender'}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        ).encode()
        response_headers = {"Content-Type": "text/xml"}
    else:  # REST-XML (S3)
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        response_headers = {"Content-Type": "application/xml"}
    return AWSResponse(request.url, status, response_headers, _Body(body))


def _throttle(request: Any) -> AWSResponse:
    headers = {key.lower(): value for key, value in request.headers.items()}
    if "x-amz-target" in headers or "x-www-form-urlencoded" in str(headers.get("content-type", "")):
        return error_response(
            request,
            400,
            "ThrottlingException" if "x-amz-target" in headers else "Throttling",
            "Rate exceeded",
        )
    return error_response(request, 503, "SlowDown", "Please reduce your request rate.")


class FaultInjector:
    """Installs a plan's faults on clients (see the module docstring). `plan` may be swapped between runs:
    the installed clients read the current one."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan(enabled=False)
        self._http = URLLib3Session()

    def install(self, client: Any) -> None:
        client.meta.events.register_first("before-send", self._before_send)

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        # "before-send.<service id>.<Operation>", e.g. before-send.dynamodb.UpdateItem
        _, _, rest = event_name.partition(".")
        service, _, operation = rest.partition(".")
        kind = self.plan.decide(service, operation)
        if kind is None:
            return None
        if kind == "throttle":
            return _throttle(request)
        if kind == "server_error":
            return error_response(request, 500, "InternalError", "We encountered an internal error.")
        if kind == "drop":
            raise ConnectionClosedError(endpoint_url=request.url)
        if kind == "crash_before":
            raise SandboxCrash(f"crash before {service}.{operation}")
        self._http.send(request)  # applied: the service has it, whatever the caller sees next
        if kind == "applied_then_error":
            return error_response(request, 500, "InternalError", "We encountered an internal error.")
        if kind == "applied_then_drop":
            raise ConnectionClosedError(endpoint_url=request.url)
        raise SandboxCrash(f"crash after {service}.{operation} was applied")
