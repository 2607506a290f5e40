"""The local API behaves like the API Gateway integration (path, SigV4 authorization, validator, payload
limit, error mapping), routes by the endpoint's traffic split, and its answers drive the guardrail: a bad
model's canary fires the rollback alarm, traffic returns to the previous model, and no request beyond the
canary's share reaches the bad one."""

from __future__ import annotations

import http.client
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pipeline_common.endpoints import alarm_names

from mlpipe.local.api import LocalInferenceApi
from mlpipe.local.endpoints import LocalEndpoints

REGION = "us-east-1"
KEY, SECRET = "AKIALOCALCALLER00001", "local-secret"
ENDPOINT = "mlpipe-test-production"
ERRORS_ALARM, LATENCY_ALARM = alarm_names(ENDPOINT)


class Model:
    """A model server with the container's /invocations contract: one prediction line per CSV row; a `bad`
    one fails (500) on every row whose first feature is negative."""

    def __init__(self, bad: bool = False) -> None:
        self.bad, self.requests = bad, 0
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                model.requests += 1
                rows = self.rfile.read(int(self.headers["Content-Length"])).decode().split()
                if model.bad and any(float(r.split(",")[0]) < 0 for r in rows):
                    status, body = 500, b"predict raised ValueError"
                else:
                    status, body = 200, "".join(f"{sum(map(float, r.split(',')))}\n" for r in rows).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Routing:
    """LocalEndpoints' `serving`: the traffic split each endpoint has now."""

    def __init__(self) -> None:
        self.weights: dict[str, dict[str, float]] = {}

    def route(self, endpoint: str, weights: dict[str, float]) -> None:
        self.weights[endpoint] = dict(weights)


def sign(
    url: str, body: bytes, key: str = KEY, secret: str = SECRET, content_type: str | None = "text/csv"
) -> urllib.request.Request:
    headers = {"Content-Type": content_type} if content_type else {}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), "execute-api", REGION).add_auth(request)
    return urllib.request.Request(url, data=body, headers=dict(request.headers), method="POST")


def call(request: urllib.request.Request) -> tuple[int, str]:
    """Sent with exactly the request's headers (urllib would add a Content-Type of its own)."""
    parts = urlsplit(request.full_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", parts.path, body=request.data, headers=dict(request.header_items()))
    response = connection.getresponse()
    answer = response.status, response.read().decode()
    connection.close()
    return answer


@pytest.fixture
def setup() -> Iterator[dict[str, Any]]:
    good, bad = Model(), Model(bad=True)
    routing = Routing()
    holder: dict[str, Any] = {}
    local = LocalEndpoints(
        REGION,
        serving=routing,
        alarm_check=lambda endpoint, config: holder["api"].alarm_check(
            config, 0.0, max_5xx=0, p99_latency_ms=1000
        ),
    )
    api = LocalInferenceApi(
        ENDPOINT,
        backends={"cfg-v1": good.url, "cfg-v2": bad.url}.get,
        weights=lambda: routing.weights.get(ENDPOINT, {}),
        secret_of={KEY: SECRET}.get,
        may_invoke=lambda key: key == KEY,
        region=REGION,
    )
    holder["api"] = api
    for version in (1, 2):
        local.call(
            "CreateModel",
            {
                "ModelName": f"m-v{version}",
                "ExecutionRoleArn": "arn:aws:iam::111111111111:role/r",
                "Containers": [{"Image": "img"}],
            },
        )
        local.call(
            "CreateEndpointConfig",
            {
                "EndpointConfigName": f"cfg-v{version}",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": f"m-v{version}",
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 2,
                    }
                ],
            },
        )
    local.call("CreateEndpoint", {"EndpointName": ENDPOINT, "EndpointConfigName": "cfg-v1"})
    while local.call("DescribeEndpoint", {"EndpointName": ENDPOINT})["EndpointStatus"] != "InService":
        pass
    with api.running() as url:
        yield {"url": url, "api": api, "local": local, "good": good, "bad": bad, "routing": routing}
    good.close()
    bad.close()


def test_a_signed_request_is_answered_by_the_model(setup: dict[str, Any]) -> None:
    assert call(sign(setup["url"], b"1,2\n3,4\n")) == (200, "3.0\n7.0\n")


@pytest.mark.parametrize(
    "build, status, message",
    [
        (
            lambda url: urllib.request.Request(
                url, data=b"1,2\n", headers={"Content-Type": "text/csv"}, method="POST"
            ),
            403,
            "Missing Authentication Token",
        ),
        (lambda url: sign(url, b"1,2\n", secret="wrong"), 403, "signature we calculated does not match"),
        (
            lambda url: sign(url, b"1,2\n", key="AKIAUNKNOWN000000000"),
            403,
            "security token included in the request is invalid",
        ),
        (
            lambda url: sign(url.replace("/v1/invocations", "/v1/other"), b"1,2\n"),
            403,
            "Missing Authentication Token",
        ),
        (
            lambda url: sign(url, b"1,2\n", content_type=None),
            400,
            "Missing required request parameters: [Content-Type]",
        ),
        (lambda url: sign(url, b"1," * (3 * 1024 * 1024 + 1)), 413, "Request Too Long"),
    ],
)
def test_refused_as_api_gateway_refuses(setup: dict[str, Any], build: Any, status: int, message: str) -> None:
    answer = call(build(setup["url"]))
    assert answer[0] == status and message in answer[1]
    assert setup["good"].requests == 0  # nothing reached the model


def test_a_model_error_is_a_424_with_the_models_message(setup: dict[str, Any]) -> None:
    setup["routing"].weights[ENDPOINT] = {"cfg-v2": 1.0}
    status, body = call(sign(setup["url"], b"-1,2\n"))
    assert status == 424 and "predict raised ValueError" in body


def test_bad_canary_rolls_back_and_no_request_beyond_its_share_reaches_the_bad_model(
    setup: dict[str, Any],
) -> None:
    local, url = setup["local"], setup["url"]
    local.call(
        "UpdateEndpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointConfigName": "cfg-v2",
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                        "WaitIntervalInSeconds": 60,
                    }
                },
                "AutoRollbackConfiguration": {
                    "Alarms": [{"AlarmName": ERRORS_ALARM}, {"AlarmName": LATENCY_ALARM}]
                },
            },
        },
    )
    answers, sent_during_canary = [], 0
    while (
        status := local.call("DescribeEndpoint", {"EndpointName": ENDPOINT})["EndpointStatus"]
    ) != "InService":
        canary = setup["routing"].weights[ENDPOINT].get("cfg-v2", 0.0) > 0
        for _ in range(20):  # traffic while the update runs: rows the bad model fails on
            answers.append(call(sign(url, b"-1,2\n")))
            sent_during_canary += canary
    assert status == "InService"
    described = local.call("DescribeEndpoint", {"EndpointName": ENDPOINT})
    assert described["EndpointConfigName"] == "cfg-v1"  # back on the previous model
    assert ERRORS_ALARM in described["FailureReason"]
    assert [alarm for _, alarm in local.alarm_history] == [ERRORS_ALARM]
    assert sent_during_canary == 20  # one bake of the canary, then the alarm
    assert setup["bad"].requests == sent_during_canary // 4  # exactly the canary's 25%, nothing after
    assert sorted({status for status, _ in answers}) == [200, 424]  # the canary's failures reached callers
    before = setup["bad"].requests
    assert all(call(sign(url, b"-1,2\n"))[0] == 200 for _ in range(10))  # the previous model keeps answering
    assert setup["bad"].requests == before


def test_good_canary_shifts_all_traffic(setup: dict[str, Any]) -> None:
    local, url = setup["local"], setup["url"]
    local.call(
        "UpdateEndpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointConfigName": "cfg-v2",
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "LINEAR",
                        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                        "WaitIntervalInSeconds": 60,
                    }
                }
            },
        },
    )
    while local.call("DescribeEndpoint", {"EndpointName": ENDPOINT})["EndpointStatus"] != "InService":
        assert all(call(sign(url, b"1,2\n"))[0] == 200 for _ in range(4))
    assert local.endpoints[ENDPOINT].config == "cfg-v2"
    assert setup["routing"].weights[ENDPOINT] == {"cfg-v2": 1.0}
