"""Deploy (`--deploy`): the approved package to a staging endpoint, its golden test through the local API,
and production behind the guardrail, with the deploy stack's handlers, settings and roles.

The deploy stack (`ModelDeploy-<env>`) is deployed into the emulator by the Emulator stage: its functions'
environments come from its template, and each handler runs as Lambda runs it, under its own role's
temporary credentials with IAM enforced (moto for DynamoDB, SNS and S3; the gateway for the stand-ins):
start-deploy from the approval through the stack's rule (or here, if the approval was delivered before),
deploy-model and golden-test as the deploy pipeline's Lambda invoke actions, record-deployment from the
endpoint and transform state changes through the stack's rule. SageMaker hosting is `LocalEndpoints` (the
real image's `serve` per endpoint config), with the CloudWatch alarm history and Application Auto Scaling
stand-ins; the local API in front of each endpoint verifies SigV4 against the secrets IAM issued and
allows callers whose policies allow `execute-api:Invoke`, as API Gateway's IAM authorization does. What
has no local counterpart (the REST API's URL) is the local one.

The golden set (rows of the validation channel and the model's answers to them) is the one the training
job wrote (`golden.json` in its output.tar.gz, `sagemaker_contract.golden`), exactly as in AWS.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from pipeline_common import endpoints
from pipeline_common.model_package import APPROVED
from sagemaker_contract.errors import UserError
from sagemaker_contract.golden import feature_lines
from start_deploy import starting

from mlpipe.local import containers, transform
from mlpipe.local.api import LocalInferenceApi
from mlpipe.local.console import StageFailed, note
from mlpipe.local.emulator import ACCOUNT
from mlpipe.local.endpoints import LocalAlarmHistory, LocalAutoscaling, LocalEndpoints
from mlpipe.local.serving import LocalServing
from mlpipe.local.stages.actions import (
    deliver_events,
    handler_faults,
    invoke_async,
    run_action,
    show_new_emails,
)
from mlpipe.local.stages.approval import show_lineage
from mlpipe.local.stages.record import read_record
from mlpipe.local.state import RunState
from stacks.functions import DEPLOY_MODEL, GOLDEN_TEST, START_DEPLOY

EXECUTE_API_INVOKE = "execute-api:Invoke"
BATCH_INPUT_ROWS = 500
BATCH_INPUT_NAME = "validation-rows.csv"


def run(state: RunState) -> None:
    if not state.options.deploy:
        note("skipped: run with --deploy (and --approve) to deploy the approved package")
        return
    cloud, arn, deployment = state.need("cloud"), state.need("package_arn"), state.need("deployment")
    if state.record.get("approval_status") != APPROVED:
        raise StageFailed(
            "--deploy deploys approved packages only: the package is not Approved (use --approve)"
        )
    deploy_model, golden_test = (deployment.function(spec.handler) for spec in (DEPLOY_MODEL, GOLDEN_TEST))
    config = json.loads(deploy_model.environment["DEPLOY_CONFIG"])

    registry = state.need("registry")
    local: LocalEndpoints

    def image_and_model(model_name: str) -> tuple[str, str]:
        package = registry.packages[local.models[model_name]["Containers"][0]["ModelPackageName"]]
        return state.need("image").tag, package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]

    def model_of_config(name: str) -> tuple[str, str]:
        return image_and_model(local.configs[name]["ProductionVariants"][0]["ModelName"])

    serving = LocalServing(state.work, model_of_config, state.client("s3"))
    state.cleanup.callback(serving.close)
    apis: dict[str, LocalInferenceApi] = {}

    def alarm_check(endpoint: str, name: str) -> str | None:
        guardrail = config["guardrail"]
        api = apis.get(endpoint)
        return api.alarm_check(name, 0.0, guardrail["max_5xx"], guardrail["p99_latency_ms"]) if api else None

    local = LocalEndpoints(
        state.region,
        serving=serving,
        alarm_check=alarm_check,
        on_event=state.events.append,
        # As SageMaker does, the job reads its input and model and writes its output as the model's execution
        # role (the endpoints' role from the deploy template), with IAM enforced.
        run_transform=lambda job: transform.run_job(
            job,
            cloud.s3_as_role(local.models[job["ModelName"]]["ExecutionRoleArn"]),
            image_and_model,
            state.work,
            containers.serve,
        ),
    )
    for stand_in in (local, LocalAlarmHistory(local), LocalAutoscaling()):
        cloud.add_service(stand_in)
    caller = cloud.user("local-api-caller", (EXECUTE_API_INVOKE,))  # for callers outside the run
    urls = {}
    for stage in endpoints.STAGES:
        name = endpoints.endpoint_name(
            deploy_model.environment["PROJECT_NAME"], deploy_model.environment["ENV_NAME"], stage
        )
        apis[name] = LocalInferenceApi(
            name,
            backends=serving.backend,
            weights=lambda name=name: serving.weights(name),
            secret_of=cloud.secret_of,
            may_invoke=lambda key: cloud.permissions.allows(key, EXECUTE_API_INVOKE),
            region=state.region,
        )
        urls[stage] = state.cleanup.enter_context(apis[name].running())
    pipeline = state.need("deploy_pipeline")
    started = time.perf_counter()
    with handler_faults(state):
        execution = _execution_of(state, arn)
        _deploy(state, execution, endpoints.STAGING, arn)
        note(
            f"staging answers at {urls[endpoints.STAGING]} ({time.perf_counter() - started:.1f} s after the approval)"
        )
        result = run_action(
            state,
            golden_test,
            {"package_arn": arn},
            {**golden_test.environment, "STAGING_API_URL": urls[endpoints.STAGING]},
            pipeline=pipeline,
            execution_id=execution,
        )
        if not result.succeeded:
            raise StageFailed(f"golden test: {result.failure_message}")
        reported = result.output_variables
        note(
            f"golden test passed: {reported['ROWS']} rows, p99 {reported['P99_MS']} ms, through the staging API"
        )
        if config["production_manual_approval"]:
            note("production promotion approved by --approve (in AWS: the pipeline's manual approval action)")
        batch = config.get("batch_transform")
        if batch:
            _put_batch_input(state, deploy_model.environment["DATA_BUCKET"], batch["input_prefix"])
        _deploy(state, execution, endpoints.PRODUCTION, arn)
        note(f"production answers at {urls[endpoints.PRODUCTION]}")
        if batch:
            _run_transform_jobs(state, local)
    state.record = read_record(state, state.trained_job())
    for key in sorted(k for k in state.record if k.startswith(("deployment:", "golden_test:"))):
        entry = state.record[key]
        note(f"{key}: {entry.get('status', 'passed' if entry.get('passed') else 'failed')}")
    show_new_emails(state)
    show_lineage(state)
    (state.work / "endpoints.json").write_text(json.dumps({"apis": urls, "caller": caller.arn}, indent=2))


def _put_batch_input(state: RunState, bucket: str, prefix: str) -> None:
    """What a user would drop under the batch input prefix: here, the validation rows without the target as
    header-free CSV in training column order (the container's own reader, as for the golden set)."""
    target = (state.record.get("hyperparameters") or {}).get("target") or None
    try:
        lines = feature_lines(state.options.data / "validation", target, count=BATCH_INPUT_ROWS)
    except (UserError, OSError) as error:
        raise StageFailed(f"batch transform input: {error}") from None
    if not lines:
        raise StageFailed("batch transform input: the validation channel has no rows")
    key = f"{prefix}{BATCH_INPUT_NAME}"
    state.client("s3").put_object(
        Bucket=bucket, Key=key, Body="".join(f"{line}\n" for line in lines).encode()
    )
    note(f"batch input: {len(lines)} validation rows at s3://{bucket}/{key}")


def _run_transform_jobs(state: RunState, local: LocalEndpoints) -> None:
    """The transform jobs deploy-model started, run as SageMaker would (the stand-in runs one when it is first
    described); their state changes go through the deploy stack's rule to record-deployment."""
    started = [
        name for name, job in local.transform_jobs.items() if job["TransformJobStatus"] == "InProgress"
    ]
    if not started:
        raise StageFailed("batch_transform is configured, but deploy-model started no transform job")
    for name in started:
        job = local.call("DescribeTransformJob", {"TransformJobName": name})
        if job["TransformJobStatus"] != "Completed":
            raise StageFailed(f"transform job {name}: {job.get('FailureReason')}")
        note(f"transform job {name}: Completed, output under {job['TransformOutput']['S3OutputPath']}")
    deliver_events(state)


def _execution_of(state: RunState, arn: str) -> str:
    """The deploy pipeline's execution for the package: the one start-deploy started when the approval was
    delivered through the deploy stack's rule, else start-deploy is invoked now with that approval (an
    approval decided before this run, say), as EventBridge would deliver it."""
    pipeline, deployment = state.need("deploy_pipeline"), state.need("deployment")

    def started() -> str | None:
        found = [e.id for e in pipeline.executions.values() if e.variables.get("PACKAGE_ARN") == arn]
        return found[-1] if found else None

    if started() is None:
        event = {
            "version": "0",
            "id": f"local-approval-{arn}",
            "detail-type": starting.DETAIL_TYPE,
            "source": "aws.sagemaker",
            "account": ACCOUNT,
            "region": state.region,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resources": [arn],
            "detail": {
                "ModelPackageArn": arn,
                "ModelPackageGroupName": deployment.function(START_DEPLOY.handler).environment[
                    "MODEL_PACKAGE_GROUP_NAME"
                ],
                "ModelApprovalStatus": APPROVED,
            },
        }
        invoke_async(state.need("cloud"), deployment.function(START_DEPLOY.handler), event)
    execution = started()
    if execution is None:
        raise StageFailed(f"start-deploy started no deploy pipeline execution for {arn}")
    return execution


def _deploy(state: RunState, execution: str, stage: str, arn: str) -> None:
    function = state.need("deployment").function(DEPLOY_MODEL.handler)
    parameters = {"stage": stage, "package_arn": arn, "pipeline_execution_id": execution}
    result = run_action(
        state, function, parameters, pipeline=state.need("deploy_pipeline"), execution_id=execution
    )
    if not result.succeeded:
        raise StageFailed(f"deploy to {stage}: {result.failure_message}")
