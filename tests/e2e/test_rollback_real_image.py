"""The guardrail with real models: `examples/flaky_model` built into the image, trained twice (a good model,
and one whose `predict` raises on rows with median income below 3), both packaged and approved. The good one
is deployed to production; the bad one is deployed behind the canary while callers keep calling the local
production API. The canary's 5xx alarm fires, traffic returns to the previous model, no request beyond the
canary's share reaches the bad one, the previous model keeps answering, and the audit trail and the one
email name the alarm."""

from __future__ import annotations

import http.client
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from deploy_model import deploying
from pipeline_common import aws, deployments, endpoints
from pipeline_common.pipeline_action import CONTINUE, FAILED, SUCCEEDED

from mlpipe.local.api import LocalInferenceApi
from mlpipe.local.codepipeline import LocalCodePipeline
from mlpipe.local.endpoints import LocalAlarmHistory, LocalAutoscaling, LocalEndpoints, StandInClient
from mlpipe.local.model_registry import LocalModelRegistry
from mlpipe.local.serving import LocalServing
from tests.conftest import Emulated
from tests.container.conftest import make_opt_ml
from tests.container.test_image import build_with_model, run_training
from tests.lambdas.test_deploy import DEPLOY_CONFIG

pytestmark = [pytest.mark.e2e, pytest.mark.image]

ROOT = Path(__file__).resolve().parents[2]
TAG = "mlpipe-flaky-model:e2e"
REGION, GROUP = "us-east-1", "mlpipe-rollback"
KEY, SECRET = "AKIAROLLBACKCALLER01", "rollback-secret"
PRODUCTION = endpoints.endpoint_name("mlpipe", "test", "production")
ERRORS_ALARM, _ = endpoints.alarm_names(PRODUCTION)


def rows() -> list[str]:
    lines = (ROOT / "data/sample/validation/validation.csv").read_text().splitlines()[1:]
    return [line.split(",", 1)[1] for line in lines]


def trained_model(tmp: Path, name: str, hyperparameters: dict[str, str]) -> bytes:
    opt = make_opt_ml(tmp / name, hyperparameters)
    code, log = run_training(TAG, opt, tmp)
    assert code == 0, log[-2000:]
    archive = tmp / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in (opt / "model").iterdir():
            tar.add(path, arcname=path.name)
    return archive.read_bytes()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    built = build_with_model(TAG, ROOT / "examples" / "flaky_model")
    assert built.returncode == 0, (built.stdout + built.stderr)[-3000:]
    tmp = tmp_path_factory.mktemp("flaky")
    return {"good": trained_model(tmp, "good", {}), "bad": trained_model(tmp, "bad", {"fail_below": "3.0"})}


def signed_post(url: str, body: bytes) -> int:
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "text/csv"})
    SigV4Auth(Credentials(KEY, SECRET), "execute-api", REGION).add_auth(request)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", parts.path, body=body, headers=dict(request.headers))
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.fixture
def world(
    models: dict[str, bytes], emulated: Emulated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    # The session's emulator (tests/conftest.py), not moto's mock_aws: that would reset the backends every
    # later test shares.
    s3, dynamodb = emulated.client("s3"), emulated.client("dynamodb")
    bucket, table = emulated.data_bucket(versioned=False), emulated.audit_table()
    topic, inbox = emulated.topic_with_inbox()
    registry = LocalModelRegistry(REGION, on_state_change=lambda event: None)
    registry.call("CreateModelPackageGroup", {"ModelPackageGroupName": GROUP})
    packages = {}
    for name in ("good", "bad"):
        job = f"mlpipe-test-{name}"
        s3.put_object(Bucket=bucket, Key=f"models/{job}/output/model.tar.gz", Body=models[name])
        dynamodb.put_item(TableName=table, Item={"job_name": {"S": job}, "status": {"S": "Completed"}})
        arn = registry.call(
            "CreateModelPackage",
            {
                "ModelPackageGroupName": GROUP,
                "ModelPackageDescription": f"training job {job}",
                "CustomerMetadataProperties": {"training-job": job},
                "InferenceSpecification": {
                    "Containers": [
                        {"Image": TAG, "ModelDataUrl": f"s3://{bucket}/models/{job}/output/model.tar.gz"}
                    ],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
            },
        )["ModelPackageArn"]
        registry.call("UpdateModelPackage", {"ModelPackageArn": arn, "ModelApprovalStatus": "Approved"})
        packages[name] = arn
    holder: dict[str, Any] = {}

    def model_of_config(config: str) -> tuple[str, str]:
        local = holder["local"]
        model = local.models[local.configs[config]["ProductionVariants"][0]["ModelName"]]
        spec = registry.packages[model["Containers"][0]["ModelPackageName"]]["InferenceSpecification"]
        return TAG, spec["Containers"][0]["ModelDataUrl"]

    serving = LocalServing(tmp_path, model_of_config, s3)
    guardrail = DEPLOY_CONFIG["guardrail"]
    api = LocalInferenceApi(
        PRODUCTION,
        backends=serving.backend,
        weights=lambda: serving.weights(PRODUCTION),
        secret_of={KEY: SECRET}.get,
        may_invoke=lambda key: key == KEY,
        region=REGION,
    )
    local = holder["local"] = LocalEndpoints(
        REGION,
        serving=serving,
        alarm_check=lambda endpoint, config: api.alarm_check(
            config, 0.0, guardrail["max_5xx"], guardrail["p99_latency_ms"]
        ),
    )
    for name, value in {
        "PROJECT_NAME": "mlpipe",
        "ENV_NAME": "test",
        "PIPELINE_NAME": "mlpipe-test-deploy",
        "AUDIT_TABLE_NAME": table,
        "TOPIC_ARN": topic,
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "DEPLOY_CONFIG": json.dumps(DEPLOY_CONFIG),
        "ENDPOINT_ROLE_ARN": "arn:aws:iam::123456789012:role/endpoint",
        "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000",
        "CAPTURE_URI": f"s3://{bucket}/data-capture/",
    }.items():
        monkeypatch.setenv(name, value)
    clients = {
        "sagemaker": StandInClient("sagemaker", registry, local),
        "codepipeline": StandInClient("codepipeline", pipeline := LocalCodePipeline("mlpipe-test-deploy")),
        "cloudwatch": StandInClient("cloudwatch", LocalAlarmHistory(local)),
        "application-autoscaling": StandInClient("application-autoscaling", LocalAutoscaling()),
        "s3": s3,
        "dynamodb": dynamodb,
        "sns": emulated.client("sns"),
    }
    try:
        with aws.use_clients(clients), api.running() as url:
            yield {
                "url": url,
                "api": api,
                "local": local,
                "pipeline": pipeline,
                "packages": packages,
                "emulated": emulated,
                "table": table,
                "inbox": inbox,
            }
    finally:
        serving.close()
        os.environ.pop("AWS_ENDPOINT_URL", None)


def deploy_with_traffic(world: dict[str, Any], arn: str, per_step: int = 12) -> Any:
    """deploy-model's production action, with callers sending `per_step` rows through the API between
    invocations (what keeps coming while SageMaker shifts traffic)."""
    pipeline, features = world["pipeline"], rows()
    execution = pipeline.start_execution("StartPipelineExecution", "test", {"PACKAGE_ARN": arn})
    parameters = {"stage": "production", "package_arn": arn, "pipeline_execution_id": execution}
    sent = 0
    for _ in range(60):
        job = pipeline.new_job(execution, "DeployModel", parameters)["CodePipeline.job"]
        result = deploying.handle(job["id"], parameters, job["data"].get("continuationToken"))
        if result.outcome != CONTINUE:
            return result
        if world["local"].endpoints[PRODUCTION].status != "Creating":
            for _ in range(per_step):
                signed_post(world["url"], f"{features[sent % len(features)]}\n".encode())
                sent += 1
    raise AssertionError("the deploy action never ended")


def test_a_bad_canary_is_rolled_back_and_the_previous_model_keeps_answering(world: dict[str, Any]) -> None:
    good, bad = world["packages"]["good"], world["packages"]["bad"]
    assert deploy_with_traffic(world, good).outcome == SUCCEEDED
    api, local = world["api"], world["local"]
    result = deploy_with_traffic(world, bad)
    assert result.outcome == FAILED and f"alarm {ERRORS_ALARM} fired" in result.message
    assert local.endpoints[PRODUCTION].config == f"{PRODUCTION}-v1"
    # The bad model received at most the canary's share (50%) of what was sent while it had traffic.
    bad_samples = [s for s in api.samples if s.config == f"{PRODUCTION}-v2"]
    while_canary = [s for s in api.samples if s.at >= bad_samples[0].at and s.at <= bad_samples[-1].at]
    assert 0 < len(bad_samples) <= (len(while_canary) + 1) // 2
    assert any(s.status >= 500 for s in bad_samples)
    # After the rollback: every request answered by the previous model.
    before = len(bad_samples)
    statuses = [signed_post(world["url"], f"{row}\n".encode()) for row in rows()[:30]]
    assert statuses == [200] * 30
    assert len([s for s in api.samples if s.config == f"{PRODUCTION}-v2"]) == before
    # The audit trail and the one email name the alarm.
    entry = world["emulated"].get_record(world["table"], "mlpipe-test-bad")["deployment:production:v2"]
    assert entry["status"] == deployments.ROLLED_BACK and entry["alarm"] == ERRORS_ALARM
    rolled = [m for m in world["emulated"].read_inbox(world["inbox"]) if "rolled back" in m["subject"]]
    assert len(rolled) == 1 and f"Alarm that fired: {ERRORS_ALARM}" in rolled[0]["body"]
