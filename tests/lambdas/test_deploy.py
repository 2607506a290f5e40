"""The deploy half's handlers against the stand-ins: start-deploy on an approval, deploy-model to staging
and to production behind the guardrail (good model to 100%, bad model rolled back with the alarm named),
golden-test pass and fail, record-deployment from the deployment and transform events; each outcome on the
audit record and emailed once, also when steps are retried.

SageMaker's hosting API is `mlpipe.local.endpoints.LocalEndpoints` and the registry `LocalModelRegistry`
(both check every request against botocore's model); DynamoDB, SNS and S3 are moto (the `emulated`
fixture), so the audit writes and emails are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from deploy_model import deploying
from golden_test import testing
from pipeline_common import aws, deployments, endpoints
from pipeline_common.pipeline_action import CONTINUE, FAILED, SUCCEEDED
from record_deployment import recording
from start_deploy import starting

from mlpipe.local.codepipeline import LocalCodePipeline
from mlpipe.local.endpoints import LocalAlarmHistory, LocalAutoscaling, LocalEndpoints, StandInClient
from mlpipe.local.lambda_runtime import LambdaContext
from mlpipe.local.model_registry import LocalModelRegistry
from tests.conftest import REGION, Emulated, unique_name
from tests.lambdas.builders import deployable_package, golden_archive, model_package_event, output_archive

PROJECT, ENV = "mlpipe", "test"
STAGING, PRODUCTION = (
    endpoints.endpoint_name(PROJECT, ENV, "staging"),
    endpoints.endpoint_name(PROJECT, ENV, "production"),
)
DEPLOY_CONFIG = {
    "staging": {
        "instance_type": "ml.m5.large",
        "instance_count": 1,
        "min_capacity": 1,
        "max_capacity": 2,
        "target_invocations_per_instance": 100,
        "serverless_memory_mb": None,
        "serverless_max_concurrency": None,
    },
    "production": {
        "instance_type": "ml.m5.large",
        "instance_count": 2,
        "min_capacity": 2,
        "max_capacity": 4,
        "target_invocations_per_instance": 100,
        "serverless_memory_mb": None,
        "serverless_max_concurrency": None,
    },
    "data_capture": True,
    "golden_test": {"rows": 5, "p99_ms": 500.0, "tolerance": 1e-4},
    "production_manual_approval": False,
    "guardrail": {
        "type": "canary",
        "size_percent": 50,
        "wait_seconds": 60,
        "max_5xx": 0,
        "p99_latency_ms": 1000.0,
    },
    "api_auth": "iam",
    "throttle_rate": 50.0,
    "throttle_burst": 100,
    "batch_transform": None,
}
ERRORS_ALARM, LATENCY_ALARM = endpoints.alarm_names(PRODUCTION)


@dataclass
class Deploy:
    emulated: Emulated
    group: str
    table: str
    inbox: str
    bucket: str
    registry: LocalModelRegistry
    endpoints: LocalEndpoints
    autoscaling: LocalAutoscaling
    codepipeline: LocalCodePipeline
    bad_versions: dict[int, str] = field(default_factory=dict)  # version -> the alarm its canary fires
    events: list[dict[str, Any]] = field(default_factory=list)

    def package(self, job: str, approve: bool = True) -> str:
        """A registered package of `job` (and its audit record), approved by default."""
        return deployable_package(
            self.emulated, self.registry, self.group, self.table, self.bucket, job, approve
        )

    def deploy(self, stage: str, arn: str, limit: int = 40) -> tuple[Any, int]:
        """Run the stage's deploy action as CodePipeline does (new job per continuation) until it ends:
        (the last result, how many invocations it took)."""
        execution = self.codepipeline.start_execution("StartPipelineExecution", "test", {"PACKAGE_ARN": arn})
        parameters = {"stage": stage, "package_arn": arn, "pipeline_execution_id": execution}
        for count in range(1, limit + 1):
            event = self.codepipeline.new_job(execution, "DeployModel", parameters)
            job = event["CodePipeline.job"]
            result = deploying.handle(job["id"], parameters, job["data"].get("continuationToken"))
            if result.outcome != CONTINUE:
                return result, count
        raise AssertionError("the deploy action never ended")

    def record(self, job: str) -> dict[str, Any]:
        return self.emulated.get_record(self.table, job) or {}

    def emails(self) -> list[dict[str, Any]]:
        return self.emulated.read_inbox(self.inbox)


@pytest.fixture
def deploy(emulated: Emulated, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deploy]:
    group = unique_name("group")
    topic, inbox = emulated.topic_with_inbox()
    table, bucket = emulated.audit_table(), emulated.data_bucket()
    registry = LocalModelRegistry(REGION, on_state_change=lambda event: None)
    registry.call("CreateModelPackageGroup", {"ModelPackageGroupName": group})
    holder: dict[str, Deploy] = {}
    local = LocalEndpoints(
        REGION,
        alarm_check=lambda endpoint, config: holder["d"].bad_versions.get(
            endpoints.version_of_config(config) or 0
        ),
        on_event=lambda event: holder["d"].events.append(event),
    )
    scaling = LocalAutoscaling()
    pipeline = LocalCodePipeline("mlpipe-test-deploy")
    for name, value in {
        "PROJECT_NAME": PROJECT,
        "ENV_NAME": ENV,
        "PIPELINE_NAME": "mlpipe-test-deploy",
        "AUDIT_TABLE_NAME": table,
        "TOPIC_ARN": topic,
        "MODEL_PACKAGE_GROUP_NAME": group,
        "DEPLOY_CONFIG": json.dumps(DEPLOY_CONFIG),
        "ENDPOINT_ROLE_ARN": "arn:aws:iam::111111111111:role/endpoint-role",
        "KMS_KEY_ARN": "arn:aws:kms:us-east-1:111111111111:key/00000000-0000-4000-8000-000000000000",
        "CAPTURE_URI": f"s3://{bucket}/data-capture/",
        "MODEL_BUCKET": bucket,
        "STAGING_API_URL": "https://local.invalid/v1/invocations",
    }.items():
        monkeypatch.setenv(name, value)
    clients = {
        "sagemaker": StandInClient("sagemaker", registry, local),
        "codepipeline": StandInClient("codepipeline", pipeline),
        "cloudwatch": StandInClient("cloudwatch", LocalAlarmHistory(local)),
        "application-autoscaling": StandInClient("application-autoscaling", scaling),
        "dynamodb": emulated.client("dynamodb"),
        "sns": emulated.client("sns"),
        "s3": emulated.client("s3"),
    }
    with aws.use_clients(clients):
        holder["d"] = Deploy(emulated, group, table, inbox, bucket, registry, local, scaling, pipeline)
        yield holder["d"]


# -- start-deploy -----------------------------------------------------------------------------------------------
def test_an_approval_starts_one_deploy_execution_with_its_package_even_when_redelivered(
    deploy: Deploy,
) -> None:
    arn = deploy.package("mlpipe-test-job-1")
    version = int(arn.rsplit("/", 1)[1])
    event = model_package_event(
        deploy.group, version, "Approved", __import__("datetime").datetime(2026, 11, 23, 10, 0)
    )
    event["detail"]["ModelPackageArn"] = arn
    approval = starting.parse_event(event)
    first = starting.start(
        approval, deploy.group, "mlpipe-test-deploy", deploy.bucket, endpoints.DEPLOY_REQUEST_KEY
    )
    again = starting.start(
        approval, deploy.group, "mlpipe-test-deploy", deploy.bucket, endpoints.DEPLOY_REQUEST_KEY
    )
    assert first["outcome"] == "started" and again["execution_id"] == first["execution_id"]
    (execution,) = deploy.codepipeline.executions.values()
    assert execution.variables["PACKAGE_ARN"] == arn
    body = (
        deploy.emulated.client("s3")
        .get_object(Bucket=deploy.bucket, Key=endpoints.DEPLOY_REQUEST_KEY)["Body"]
        .read()
    )
    assert json.loads(body)["package_arn"] == arn
    rejected = starting.Approval("other", arn, deploy.group, "Rejected")
    assert (
        starting.start(rejected, deploy.group, "mlpipe-test-deploy", deploy.bucket, "k")["outcome"]
        == "ignored"
    )


# -- deploy-model ----------------------------------------------------------------------------------------------
def test_staging_deploy_creates_model_config_and_endpoint_once_and_records_one_email(deploy: Deploy) -> None:
    arn = deploy.package("mlpipe-test-job-1")
    result, invocations = deploy.deploy("staging", arn)
    assert result.outcome == SUCCEEDED and invocations >= 2  # Creating, then InService
    assert result.output_variables["ENDPOINT_CONFIG"] == f"{STAGING}-v1"
    config = deploy.endpoints.configs[f"{STAGING}-v1"]
    assert config["KmsKeyId"].startswith("arn:aws:kms:")
    assert config["DataCaptureConfig"]["KmsKeyId"] == config["KmsKeyId"]
    assert deploy.endpoints.models["mlpipe-test-v1"]["Containers"] == [{"ModelPackageName": arn}]
    assert f"endpoint/{STAGING}/variant/AllTraffic" in deploy.autoscaling.targets
    entry = deploy.record("mlpipe-test-job-1")["deployment:staging:v1"]
    assert (
        entry["status"] == "InService"
        and entry["endpoint"] == STAGING
        and entry["started_at"] <= entry["ended_at"]
    )
    assert entry["config"]["instance_type"] == "ml.m5.large"  # the stage's config, kept from the start
    # The whole action again (a retried stage): nothing new is created, no second email.
    again, _ = deploy.deploy("staging", arn)
    assert again.outcome == SUCCEEDED
    creates = [op for op, _ in deploy.endpoints.calls if op.startswith("Create")]
    assert len([op for op in creates if op == "CreateEndpoint"]) == 1
    (email,) = deploy.emails()
    assert email["attributes"]["status"] == "InService" and email["attributes"]["stage"] == "staging"
    assert "v1 is serving in staging" in email["subject"]


def test_production_canary_of_a_good_model_ends_with_it_on_all_traffic(deploy: Deploy) -> None:
    first, second = deploy.package("mlpipe-test-job-1"), deploy.package("mlpipe-test-job-2")
    assert deploy.deploy("production", first)[0].outcome == SUCCEEDED
    deploy.emails()
    result, _ = deploy.deploy("production", second)
    assert result.outcome == SUCCEEDED
    endpoint = deploy.endpoints.endpoints[PRODUCTION]
    assert endpoint.config == f"{PRODUCTION}-v2" and endpoint.weights == {f"{PRODUCTION}-v2": 1.0}
    (update,) = [p for op, p in deploy.endpoints.calls if op == "UpdateEndpoint"]
    routing = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
        "WaitIntervalInSeconds": 60,
    }
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": ERRORS_ALARM},
        {"AlarmName": LATENCY_ALARM},
    ]
    assert deploy.record("mlpipe-test-job-2")["deployment:production:v2"]["status"] == "InService"
    (email,) = deploy.emails()
    assert "v2 is serving in production" in email["subject"]


def test_production_canary_of_a_bad_model_rolls_back_and_names_the_alarm(deploy: Deploy) -> None:
    good, bad = deploy.package("mlpipe-test-job-1"), deploy.package("mlpipe-test-job-2")
    deploy.deploy("production", good)
    deploy.emails()
    deploy.bad_versions[2] = ERRORS_ALARM
    result, _ = deploy.deploy("production", bad)
    assert result.outcome == FAILED
    assert f"rolled back to {PRODUCTION}-v1: alarm {ERRORS_ALARM} fired" in result.message
    endpoint = deploy.endpoints.endpoints[PRODUCTION]
    assert endpoint.config == f"{PRODUCTION}-v1" and endpoint.weights == {f"{PRODUCTION}-v1": 1.0}
    # The bad model never had more than the canary's share of the traffic.
    splits = [weights for name, weights in deploy.endpoints.routes if name == PRODUCTION]
    assert max(w.get(f"{PRODUCTION}-v2", 0.0) for w in splits) == 0.5
    assert splits[-1] == {f"{PRODUCTION}-v1": 1.0}
    entry = deploy.record("mlpipe-test-job-2")["deployment:production:v2"]
    assert entry["status"] == "RolledBack" and entry["alarm"] == ERRORS_ALARM
    assert entry["previous_config"] == f"{PRODUCTION}-v1"
    (email,) = deploy.emails()
    assert "v2 rolled back in production" in email["subject"]
    assert f"Alarm that fired: {ERRORS_ALARM}" in email["body"]
    # record-deployment sees the same rollback in SageMaker's events: same record, no second email.
    settings = deployments.DeploySettings.from_env()
    rollbacks = [e for e in deploy.events if e["detail"]["EndpointStatus"] == "ROLLING_BACK"]
    assert rollbacks
    deploy.endpoints.endpoints[PRODUCTION].status = "RollingBack"  # as it was when the event was sent
    deploy.endpoints.endpoints[PRODUCTION].pending = f"{PRODUCTION}-v2"
    deploy.endpoints.endpoints[PRODUCTION].phases = []
    outcome = recording.handle_event(settings, rollbacks[0], "invocation-1")
    assert outcome["status"] == "RolledBack" and outcome["emailed"] is False
    assert deploy.emails() == []


def test_a_package_not_approved_or_of_another_group_is_refused(deploy: Deploy) -> None:
    pending = deploy.package("mlpipe-test-job-1", approve=False)
    result, _ = deploy.deploy("staging", pending)
    assert result.outcome == FAILED and "not Approved" in result.message
    other = pending.replace(deploy.group.lower(), "someone-else")
    result, _ = deploy.deploy("staging", other)
    assert result.outcome == FAILED and "is not a package of this project's group" in result.message
    assert not deploy.endpoints.endpoints


# -- golden test --------------------------------------------------------------------------------------------------
GOLDEN = {
    "content_type": "text/csv",
    "rows": ["1.0,2.0", "3.0,4.0", "5.0,6.0"],
    "predictions": [0.5, 1.5, 2.5],
}


def _golden(deploy: Deploy, job: str) -> str:
    arn = deploy.package(job)
    deploy.emulated.put_objects(deploy.bucket, {f"models/{job}/output/output.tar.gz": golden_archive(GOLDEN)})
    return arn


def _answers(predictions: dict[str, float], status: int = 200, seconds: float = 0.01) -> Any:
    def call(body: bytes, content_type: str) -> testing.Call:
        assert content_type == "text/csv"
        row = body.decode().strip()
        return testing.Call(
            status, f"{predictions[row]}\n" if status == 200 else '{"error": "boom"}', seconds
        )

    return call


def _run_golden(deploy: Deploy, arn: str, call: Any) -> Any:
    execution = deploy.codepipeline.start_execution("StartPipelineExecution", "test", {"PACKAGE_ARN": arn})
    job = deploy.codepipeline.new_job(execution, "GoldenTest", {"package_arn": arn})["CodePipeline.job"]
    return testing.handle(job["id"], {"package_arn": arn}, call)


def test_golden_test_passes_within_tolerance_and_budget_and_emails_once(deploy: Deploy) -> None:
    arn = _golden(deploy, "mlpipe-test-job-1")
    good = dict(zip(GOLDEN["rows"], [0.50000001, 1.5, 2.5], strict=True))
    result = _run_golden(deploy, arn, _answers(good))
    assert result.outcome == SUCCEEDED and result.output_variables["ROWS"] == "3"
    recorded = deploy.record("mlpipe-test-job-1")["golden_test:v1"]
    assert recorded["passed"] is True and recorded["rows"] == 3
    assert _run_golden(deploy, arn, _answers(good)).outcome == SUCCEEDED  # a retry: same record, no email
    (email,) = deploy.emails()
    assert "golden test passed" in email["subject"]


@pytest.mark.parametrize(
    "predictions, status, seconds, reason",
    [
        ([0.5, 1.7, 2.5], 200, 0.01, "row 1: prediction 1.7 differs from the recorded 1.5"),
        ([0.5, 1.5, 2.5], 424, 0.01, "row 0: the API answered 424"),
        ([0.5, 1.5, 2.5], 200, 0.9, "p99 latency 900 ms is over the budget of 500 ms"),
    ],
)
def test_golden_test_fails_with_its_reason_record_and_email(
    deploy: Deploy, predictions: list[float], status: int, seconds: float, reason: str
) -> None:
    arn = _golden(deploy, "mlpipe-test-job-1")
    result = _run_golden(
        deploy, arn, _answers(dict(zip(GOLDEN["rows"], predictions, strict=True)), status, seconds)
    )
    assert result.outcome == FAILED and reason in result.message
    assert deploy.record("mlpipe-test-job-1")["golden_test:v1"]["passed"] is False
    (email,) = deploy.emails()
    assert "golden test failed" in email["subject"] and reason in email["body"]
    assert (
        deploy.codepipeline.result(deploy.codepipeline.jobs and list(deploy.codepipeline.jobs)[-1]).succeeded
        is False
    )


@pytest.mark.parametrize(
    ("archive", "reason"),
    [
        (False, "does not exist"),  # no output.tar.gz beside the model
        (True, "holds no golden.json"),  # the job wrote none (no validation channel): an archive without it
    ],
)
def test_golden_test_without_the_jobs_golden_set_fails_naming_it(
    deploy: Deploy, archive: bool, reason: str
) -> None:
    arn = deploy.package("mlpipe-test-job-1")
    if archive:
        deploy.emulated.put_objects(
            deploy.bucket,
            {"models/mlpipe-test-job-1/output/output.tar.gz": output_archive({"model-meta.json": b"{}"})},
        )
    result = _run_golden(deploy, arn, _answers({}))
    assert result.outcome == FAILED and "no golden set" in result.message and reason in result.message


# -- record-deployment -------------------------------------------------------------------------------------------
def test_record_deployment_records_in_service_from_the_event_and_ignores_other_endpoints(
    deploy: Deploy,
) -> None:
    arn = deploy.package("mlpipe-test-job-1")
    deploy.deploy("staging", arn)
    deploy.emails()
    settings = deployments.DeploySettings.from_env()
    (in_service,) = [e for e in deploy.events if e["detail"]["EndpointStatus"] == "IN_SERVICE"]
    outcome = recording.handle_event(settings, in_service, "invocation-1")
    assert outcome == {
        "outcome": "recorded",
        "status": "InService",
        "version": 1,
        "emailed": False,
    }  # deploy-model emailed
    other = json.loads(json.dumps(in_service))
    other["detail"]["EndpointName"] = "someone-elses-endpoint"
    assert recording.handle_event(settings, other, "invocation-2")["outcome"] == "ignored"
    assert deploy.emails() == []


def test_lambda_handler_runs_with_a_context(deploy: Deploy) -> None:
    from record_deployment import handler

    event = {
        "id": "e1",
        "account": "111111111111",
        "detail-type": "SageMaker Endpoint Deployment State Change",
        "detail": {"EndpointName": "not-ours"},
    }
    assert (
        handler.lambda_handler(event, LambdaContext(function_name="record-deployment", region=REGION))[
            "outcome"
        ]
        == "ignored"
    )


# -- batch transform after a production deploy ---------------------------------------------------------------
def test_a_production_deploy_starts_one_transform_job_and_its_end_is_recorded_and_emailed_once(
    deploy: Deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = {
        "input_prefix": "batch/input/",
        "output_prefix": "batch/output/",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 1,
    }
    monkeypatch.setenv("DEPLOY_CONFIG", json.dumps({**DEPLOY_CONFIG, "batch_transform": batch}))
    monkeypatch.setenv("DATA_BUCKET", "data-bucket")
    arn = deploy.package("mlpipe-test-job-1")
    result, _ = deploy.deploy("production", arn)
    assert result.outcome == SUCCEEDED
    assert deploy.deploy("production", arn)[0].outcome == SUCCEEDED  # a retried stage: a new execution
    jobs = list(deploy.endpoints.transform_jobs.values())
    assert len(jobs) == 2  # one per production deploy (execution), none per retry of an action
    job = jobs[0]
    assert job["ModelName"] == "mlpipe-test-v1"
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://data-bucket/batch/input/"
    assert job["TransformInput"]["SplitType"] == "Line" and job["BatchStrategy"] == "MultiRecord"
    assert job["TransformOutput"]["S3OutputPath"].startswith(f"s3://{deploy.bucket}/batch/output/")
    assert job["TransformOutput"]["KmsKeyId"].startswith("arn:aws:kms:")
    deploy.emails()
    sagemaker = StandInClient("sagemaker", deploy.endpoints)
    sagemaker.describe_transform_job(TransformJobName=job["TransformJobName"])  # the job runs and ends
    (event,) = [e for e in deploy.events if e["detail-type"] == "SageMaker Transform Job State Change"][:1]
    settings = deployments.DeploySettings.from_env()
    first = recording.handle_event(settings, event, "invocation-1")
    again = recording.handle_event(settings, event, "invocation-2")  # a redelivery
    assert first == {"outcome": "recorded", "status": "Completed", "version": 1, "emailed": True}
    assert again["emailed"] is False
    entry = deploy.record("mlpipe-test-job-1")[f"transform:{job['TransformJobName']}"]
    assert entry["status"] == "Completed" and entry["output"].startswith(
        f"s3://{deploy.bucket}/batch/output/"
    )
    (email,) = deploy.emails()
    assert "completed" in email["subject"] and email["attributes"]["event"] == "transform"
