"""The REST API in front of a local endpoint, behaving as the API Gateway integration of
`stacks/constructs/inference_api.py` does:

- the same path: `POST /v1/invocations` (anything else: 403 "Missing Authentication Token", as API Gateway
  answers for an unknown resource);
- IAM authorization: a SigV4 signature for `execute-api`, verified against the caller's secret key (a
  missing or wrong signature is 403), and the caller must be allowed `execute-api:Invoke`;
- the request validator: `Content-Type` is required (400);
- the payload limit of the endpoint behind it (6 MB real-time, 4 MB serverless): 413;
- the integration: the body and `Content-Type`/`Accept` passed as they are to the endpoint, whose traffic
  split (`LocalEndpoints` routing: canary, linear steps, rollback) picks the model; SageMaker's answer
  mapped by `pipeline_common.endpoints.ERROR_MAP` (a model's non-200 answer is SageMaker's 424 ModelError,
  an unreachable model its 5xx).

Every answer from a model is also a metric sample (`Invocation5XXErrors`, `ModelLatency`) for the config
that gave it, so `alarm_check` can say, as CloudWatch would, whether a rollback alarm fires for a config in
its bake.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pipeline_common.endpoints import API_PATH, API_STAGE, ERROR_MAP, MAX_PAYLOAD_BYTES, alarm_names

PATH = f"/{API_STAGE}/{API_PATH}"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<headers>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_CLOCK_SKEW_SECONDS = 300  # API Gateway refuses signatures more than 5 minutes off


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def verify_sigv4(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    secret_of: Callable[[str], str | None],
    region: str,
) -> str:
    """The access key of a request correctly signed for execute-api in `region`; Refused(403) otherwise."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lowered = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.match(lowered.get("authorization", ""))
    if match is None:
        raise Refused(403, "Missing Authentication Token")
    if match["service"] != "execute-api" or match["region"] != region:
        raise Refused(
            403, f"Credential should be scoped to a valid region and service execute-api in {region}"
        )
    secret = secret_of(match["key"])
    if secret is None:
        raise Refused(403, "The security token included in the request is invalid.")
    stamp = lowered.get("x-amz-date", "")
    try:
        moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Refused(403, "Signature not yet current or expired: no valid X-Amz-Date") from None
    if abs((datetime.now(UTC) - moment).total_seconds()) > MAX_CLOCK_SKEW_SECONDS:
        raise Refused(403, "Signature expired")
    signed = match["headers"].split(";")
    request = AWSRequest(
        method=method, url=url, data=body, headers={h: lowered[h] for h in signed if h in lowered}
    )
    request.context["timestamp"] = stamp
    auth = SigV4Auth(
        Credentials(match["key"], secret, lowered.get("x-amz-security-token")), "execute-api", region
    )
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if expected != match["signature"]:
        raise Refused(
            403,
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method.",
        )
    return match["key"]


def api_status(sagemaker_status: int) -> int:
    """SageMaker's status → the API's, by the integration responses (first matching pattern)."""
    for pattern, status in ERROR_MAP:
        if re.fullmatch(pattern, str(sagemaker_status)):
            return status
    return sagemaker_status


@dataclass
class Sample:
    config: str
    status: int  # the model's own HTTP status (0: unreachable)
    model_ms: float
    at: float = field(default_factory=time.monotonic)


@dataclass
class LocalInferenceApi:
    """One stage's API, served on loopback (`url`)."""

    endpoint: str
    backends: Callable[[str], str | None]  # endpoint config → the model container's base URL
    weights: Callable[[], dict[str, float]]  # the endpoint's current traffic split
    secret_of: Callable[[str], str | None]  # access key → secret key (None: unknown key)
    may_invoke: Callable[[str], bool]  # access key → allowed execute-api:Invoke on this API
    region: str
    max_bytes: int = MAX_PAYLOAD_BYTES
    samples: list[Sample] = field(default_factory=list)
    _served: dict[str, int] = field(default_factory=dict)
    _split: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # -- the integration ------------------------------------------------------------------------------------
    def _pick(self) -> str | None:
        """Weighted round robin: the config furthest below its share so far (deterministic, so a canary of
        a share gets exactly that share of the requests)."""
        weights = {c: w for c, w in self.weights().items() if w > 0}
        if not weights:
            return None
        with self._lock:
            if weights != self._split:  # a new split: its shares count from now
                self._split, self._served = dict(weights), {}
            total = sum(self._served.get(c, 0) for c in weights) + 1
            config = max(sorted(weights), key=lambda c: weights[c] * total - self._served.get(c, 0))
            self._served[config] = self._served.get(config, 0) + 1
        return config

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            if method != "POST" or urlsplit(path).path != PATH:
                raise Refused(403, "Missing Authentication Token")
            key = verify_sigv4(
                method,
                f"http://{headers.get('Host', 'localhost')}{path}",
                headers,
                body,
                self.secret_of,
                self.region,
            )
            if not self.may_invoke(key):
                raise Refused(
                    403,
                    f"User is not authorized to access this resource with an explicit deny ({key[:8]}...)",
                )
            content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
            if not content_type:
                raise Refused(400, "Missing required request parameters: [Content-Type]")
            if len(body) > self.max_bytes:
                raise Refused(413, "Request Too Long")
        except Refused as refused:
            return (
                refused.status,
                {"Content-Type": "application/json"},
                json.dumps({"message": str(refused)}).encode(),
            )
        config = self._pick()
        url = self.backends(config) if config else None
        if config is None or url is None:
            return (
                api_status(500),
                {"Content-Type": "application/json"},
                b'{"message": "Endpoint is not in service"}',
            )
        accept = next((v for k, v in headers.items() if k.lower() == "accept"), "")
        status, answer, answer_type, seconds = _post(url, body, content_type, accept)
        self.samples.append(Sample(config, status, seconds * 1000))
        if status == 200:
            return 200, {"Content-Type": answer_type or "text/csv"}, answer
        # SageMaker: a model's own error is a ModelError (424) carrying its body; no answer is a 5xx.
        sagemaker_status = 424 if status else 500
        message = {
            "ErrorCode": "MODEL_ERROR" if status else "INTERNAL_FAILURE",
            "OriginalStatusCode": status,
            "OriginalMessage": answer.decode(errors="replace")[:1000],
        }
        return (
            api_status(sagemaker_status),
            {"Content-Type": "application/json"},
            json.dumps(message).encode(),
        )

    # -- CloudWatch, computed from the answers --------------------------------------------------------------
    def alarm_check(self, config: str, since: float, max_5xx: int, p99_latency_ms: float) -> str | None:
        """The rollback alarm that fires for `config`'s answers since `since` (monotonic), or None: 5xx from
        the model (Invocation5XXErrors) above `max_5xx`, or its p99 ModelLatency above the budget."""
        errors_alarm, latency_alarm = alarm_names(self.endpoint)
        mine = [s for s in self.samples if s.config == config and s.at >= since]
        if sum(1 for s in mine if s.status >= 500 or s.status == 0) > max_5xx:
            return errors_alarm
        latencies = sorted(s.model_ms for s in mine)
        if latencies and latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)] > p99_latency_ms:
            return latency_alarm
        return None

    # -- the HTTP front -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, answer = api.handle(
                    self.command, self.path, dict(self.headers.items()), body
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_GET = do_PUT = _any

        class Server(ThreadingHTTPServer):
            # The default backlog of 5 drops connections under a burst of callers (a 1 s SYN retry each).
            request_queue_size = 128
            daemon_threads = True

        server = Server(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}{PATH}"
        finally:
            server.shutdown()
            server.server_close()


_connections = threading.local()  # keep-alive connections to the models, one per API thread and model


def _post(base_url: str, body: bytes, content_type: str, accept: str) -> tuple[int, bytes, str, float]:
    """(status, body, content type, seconds) of the model's /invocations; status 0 when it is unreachable."""
    parts = urlsplit(base_url)
    pool = _connections.__dict__.setdefault("pool", {})
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    started = time.perf_counter()
    for attempt in (1, 2):  # a kept-alive connection the model closed meanwhile is reopened once
        connection = pool.get(base_url) or http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            connection.request("POST", "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            pool[base_url] = connection
            return (
                response.status,
                answer,
                response.getheader("Content-Type", ""),
                time.perf_counter() - started,
            )
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            pool.pop(base_url, None)
            if attempt == 2:
                return 0, str(error).encode(), "", time.perf_counter() - started
    raise AssertionError("unreachable")
