"""What golden-test does for one CodePipeline job: the staging model, called for real through its API.

The golden set travels with the training job: its container writes `golden.json` to
`/opt/ml/output/data/` (`sagemaker_contract.golden`), which SageMaker uploads as the job's
`output/output.tar.gz` next to the `model.tar.gz` the package's inference spec names; this reads it from
there: `{"content_type": "text/csv", "rows": ["<features>", ...], "predictions": [<number>, ...]}`, rows of
the validation channel without the target and the trained model's answers to them, as `serve` gave them.
A package whose job wrote none (no validation channel) fails the test with that reason.
Each row is one signed POST to the staging API (`STAGING_API_URL`, SigV4 for `execute-api` with this
function's own role, as any IAM client calls it). It passes when every call answers 200 with one
prediction per row, each within `tolerance` of the recorded one (absolute, or relative to it when it is
larger than 1), and the p99 latency is within `p99_ms`. A failure fails the action with its one-line
reason, is recorded on the audit record (`golden_test:v<version>`) and emailed once.

Guarantees (at-least-once invocations, any call failing, a crash anywhere): the test only reads, so a
retry repeats it; the record keeps the first result written for the version (a later, different result of
a retried test is logged, not recorded); one email per version and outcome; exactly one job result.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from pipeline_common import audit, aws, deployments, endpoints, model_meta, notify, pipeline_action
from pipeline_common.errors import BadInputError
from pipeline_common.pipeline_action import FAILED, SUCCEEDED, ActionResult

logger = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class GoldenSet:
    content_type: str
    rows: list[str]
    predictions: list[float]

    @classmethod
    def parse(cls, text: str) -> GoldenSet:
        body = json.loads(text)
        rows, predictions = body.get("rows"), body.get("predictions")
        if (
            not isinstance(rows, list)
            or not isinstance(predictions, list)
            or len(rows) != len(predictions)
            or not rows
        ):
            raise BadInputError("golden.json needs as many rows as predictions, at least one")
        return cls(
            str(body.get("content_type") or "text/csv"),
            [str(r) for r in rows],
            [float(p) for p in predictions],
        )


@dataclass(frozen=True)
class Call:
    status: int
    body: str
    seconds: float


def signed_post(url: str, body: bytes, content_type: str) -> Call:
    """POST with SigV4 for execute-api, with the caller's credentials (the Lambda's role)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = boto3.session.Session().get_credentials()
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": content_type, "Accept": "text/csv"}
    )
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", aws.region()).add_auth(request)
    prepared = urllib.request.Request(url, data=body, headers=dict(request.headers), method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(prepared, timeout=TIMEOUT_SECONDS) as response:
            return Call(response.status, response.read().decode(), time.perf_counter() - started)
    except urllib.error.HTTPError as error:
        return Call(error.code, error.read().decode(errors="replace"), time.perf_counter() - started)


def p99(seconds: list[float]) -> float:
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def within(got: float, expected: float, tolerance: float) -> bool:
    return abs(got - expected) <= tolerance * max(1.0, abs(expected))


def evaluate(golden: GoldenSet, rows: int, p99_ms: float, tolerance: float, call: Any) -> dict[str, Any]:
    """Run the golden rows through `call(body, content_type) -> Call`; the result with `passed` and `reason`."""
    latencies: list[float] = []
    for index, (row, expected) in enumerate(list(zip(golden.rows, golden.predictions, strict=True))[:rows]):
        answer = call(f"{row}\n".encode(), golden.content_type)
        latencies.append(answer.seconds)
        if answer.status != 200:
            return _failed(
                f"row {index}: the API answered {answer.status}: {answer.body.strip()[:200]}", latencies
            )
        lines = [line for line in answer.body.strip().splitlines() if line.strip()]
        if len(lines) != 1:
            return _failed(f"row {index}: expected one prediction, got {len(lines)} lines", latencies)
        try:
            got = float(lines[0].split(",")[0])
        except ValueError:
            return _failed(f"row {index}: the prediction {lines[0][:80]!r} is not a number", latencies)
        if not within(got, expected, tolerance):
            return _failed(
                f"row {index}: prediction {got:g} differs from the recorded {expected:g} by more than {tolerance:g}",
                latencies,
            )
    measured = p99(latencies) * 1000
    if measured > p99_ms:
        return _failed(f"p99 latency {measured:.0f} ms is over the budget of {p99_ms:g} ms", latencies)
    return {"passed": True, "reason": "", "rows": len(latencies), "p99_ms": round(measured, 1)}


def _failed(reason: str, latencies: list[float]) -> dict[str, Any]:
    return {
        "passed": False,
        "reason": reason,
        "rows": len(latencies),
        "p99_ms": round(p99(latencies) * 1000, 1),
    }


def record_and_email(
    settings: deployments.DeploySettings, package: deployments.Package, result: dict[str, Any], token: str
) -> None:
    attribute = f"golden_test:v{package.version}"
    fields = {**result, "model_package_arn": package.arn, "tested_at": audit.now_iso()}
    try:
        aws.client("dynamodb").update_item(
            TableName=settings.audit_table_name,
            Key={"job_name": {"S": package.job_name}},
            UpdateExpression="SET #g = :g",
            ConditionExpression="attribute_exists(#job) AND attribute_not_exists(#g)",
            ExpressionAttributeNames={"#g": attribute, "#job": "job_name"},
            ExpressionAttributeValues={":g": audit.to_attribute(audit.clean(fields))},
        )
    except Exception as error:
        if aws.error_code(error) != audit.CONDITIONAL_CHECK_FAILED:
            raise
        logger.info("the golden test of v%s was recorded before; keeping that record", package.version)
    outcome = "passed" if result["passed"] else "failed"

    def email(record: dict[str, Any]) -> notify.Email:
        head = f"v{package.version} golden test {outcome} on staging"
        lines = [
            f"{head}.",
            "",
            f"Package:      {package.arn}",
            f"Training job: {package.job_name}",
            f"Rows:         {result['rows']}",
            f"p99 latency:  {result['p99_ms']} ms",
        ]
        if result["reason"]:
            lines += ["", f"Reason: {result['reason']}"]
        return notify.Email(
            subject=deployments.subject(settings, head, package.job_name),
            body="\n".join(lines) + "\n",
            attributes={
                "event": "golden-test",
                "status": outcome,
                "project": settings.project_name,
                "environment": settings.env_name,
            },
        )

    deployments.email_once(settings, package.job_name, f"{attribute}:{outcome}", email, token)


def read_golden_set(package: deployments.Package) -> str:
    """golden.json from the output.tar.gz beside the package's model.tar.gz (see the module doc)."""
    uri = model_meta.output_archive_uri(package.model_data_url)
    if uri is None:
        raise BadInputError(
            f"v{package.version}'s model {package.model_data_url!r} is not a training job's model.tar.gz: "
            f"no {model_meta.OUTPUT_ARCHIVE} beside it holds a golden set"
        )
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if aws.error_code(error) in model_meta.NOT_THERE:
            raise BadInputError(f"no golden set: {uri} does not exist") from error
        raise
    golden = model_meta.read_json_member(body, endpoints.GOLDEN_NAME)
    if golden is None:
        raise BadInputError(
            f"no golden set: {uri} holds no {endpoints.GOLDEN_NAME} (the job had no validation channel?)"
        )
    return json.dumps(golden)


def handle(job_id: str, raw_parameters: Any, call: Any = None) -> ActionResult:
    try:
        settings = deployments.DeploySettings.from_env()
        params = pipeline_action.parameters(raw_parameters, ("package_arn",), ("pipeline_execution_id",))
        package = deployments.Package.describe(params["package_arn"], settings.model_package_group)
        golden = GoldenSet.parse(read_golden_set(package))
        config = settings.deploy["golden_test"]
        call = call or functools.partial(signed_post, settings.staging_api_url)
        result = evaluate(
            golden, int(config["rows"]), float(config["p99_ms"]), float(config["tolerance"]), call
        )
        record_and_email(settings, package, result, job_id)
        if result["passed"]:
            outcome = ActionResult(
                SUCCEEDED,
                package.job_name,
                f"golden test passed: {result['rows']} rows, p99 {result['p99_ms']} ms",
                output_variables={"P99_MS": str(result["p99_ms"]), "ROWS": str(result["rows"])},
            )
        else:
            outcome = ActionResult(FAILED, package.job_name, f"golden test failed: {result['reason']}")
    except Exception as error:
        outcome = pipeline_action.outcome_of_error(error, None, "golden-test", "retry")
    pipeline_action.put_result(job_id, outcome)
    return outcome
